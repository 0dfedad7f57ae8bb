"""Device selection shared by models, trainers and dream environments.

:func:`resolve_device` is the one place a user's device string is checked: an unknown name
(``"banana"``) or a device this machine lacks (``"cuda"`` without CUDA, ``"cuda:3"`` on a one-GPU
machine) raises :class:`~worldflux_gym.core.errors.DeviceError` there, not as torch's error at the
first tensor.

**Subprocesses.** A process that forks after torch ran a parallel CPU op (a dream step, a fit) gives
its child a dead OpenMP thread pool: the child's first parallel op hangs for ever. That is what
``gym.make_vec(id, vectorization_mode="async")`` (Gymnasium forks by default on Linux) and
``SubprocVecEnv(..., start_method="fork")`` do. Importing worldflux-gym therefore registers a fork
handler that gives every forked child one torch thread (what PyTorch's own ``DataLoader`` workers
do), which keeps fork safe and is the right setting for one env per process anyway. CUDA cannot be
used at all in a child forked after the parent used it: :func:`resolve_device` says so and names
the start methods that work (``spawn``, ``forkserver``).
"""

from __future__ import annotations

import os

import torch

from worldflux_gym.core.errors import DeviceError

_HINT = "use 'auto' (CUDA when present, else the CPU), 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(device: str | torch.device = "auto", name: str = "device") -> torch.device:
    """``"auto"`` picks CUDA when it is present and the CPU otherwise; anything else is checked.

    ``name`` is how the caller calls the option (``"--device"``), used in the error message.
    """
    if device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        _check_available(device, name)
        return device
    if not isinstance(device, torch.device):
        if not isinstance(device, str):
            raise DeviceError(f"{name} must be a device name, got {device!r}; {_HINT}")
        try:
            device = torch.device(device)
        except (RuntimeError, ValueError) as err:
            raise DeviceError(f"{name} {device!r} is not a device torch knows; {_HINT}") from err
    _check_available(device, name)
    return device


def _one_thread_after_fork() -> None:
    """Fork handler (child side): one torch thread, so that the inherited OpenMP pool is never used."""
    torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_one_thread_after_fork)

_SPAWN_HINT = (
    "start the subprocesses with 'spawn' or 'forkserver' (gym.make_vec(id, n, "
    "vectorization_mode='async', vector_kwargs={'context': 'spawn'}), SubprocVecEnv(fns, "
    "start_method='spawn')), or use device='cpu' there"
)


def _check_available(device: torch.device, name: str) -> None:
    if device.type == "cuda":
        if torch.cuda._is_in_bad_fork():
            raise DeviceError(
                f"{name} {str(device)!r}: this process was forked after its parent used CUDA, and CUDA "
                f"cannot be used in such a child; {_SPAWN_HINT}"
            )
        if not torch.cuda.is_available():
            why = "built without CUDA" if torch.version.cuda is None else "no GPU found"
            raise DeviceError(
                f"{name} {str(device)!r}: CUDA is not available on this machine (torch "
                f"{torch.__version__}, {why}); use 'cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"{name} {str(device)!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError(f"{name} 'mps': Apple's MPS backend is not available here; use 'cpu' or 'auto'")
    elif device.type not in ("cpu", "meta"):
        backend = getattr(torch, device.type, None)  # torch.xpu, torch.mtia ...: available here?
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise DeviceError(f"{name} {str(device)!r}: that device is not available here; {_HINT}")
