"""The ensemble's fast path for imagination: CPU kernels and the prepared-weights cache.

Why this exists. A dream step of the ensemble is a few small matrix products per member, and on
a CPU the obvious way to run them, one batched ``torch.baddbmm`` per layer over all members (what
training does, and the GPU), loses to the hardware: it splits the members between the threads
(3 and 2 for 5 elites on 2 cores) and writes activations that leave the cache. Gathering the
elites' weights and converting them costs more than a whole step at small batches. So, without
autograd:

- weights are prepared once (the elites gathered, converted, laid out per member) and cached on
  the model until a weight or the elite choice changes (:func:`cached_weights`; GPU inference
  uses the cache too);
- on the CPU each member runs on its own, in slices of rows whose activations stay in a core's
  cache (:func:`forward_members`), each layer one fused product + SiLU through oneDNN's
  ``torch.ops.mkldnn._linear_pointwise`` (:func:`linear`): the kernel ``torch.compile`` emits for
  Linear + SiLU on CPUs. It is a private op: builds without oneDNN, small layers (where MKL is as
  fast and cheaper to call) and bfloat16 on CPUs without bfloat16 products take ``F.linear``.

The figures behind each choice are in ``benchmarks/RESULTS.md`` ("Ensemble step"); the tests check
that every path computes what training computes (``tests/test_ensemble.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch.nn import functional as F

T = TypeVar("T")

# Size (in floats) of one layer's activations per slice when a large CPU batch is split: ~1 MB, a
# core's L2 cache (slices beat whole batches at N=16384; benchmarks/RESULTS.md, "Ensemble step").
_CPU_CHUNK_FLOATS = 1 << 18

# oneDNN's fused product + activation, the kernel torch.compile emits for Linear + SiLU on CPUs: faster
# than torch.addmm + F.silu (MKL) for the ensemble's hidden layers (benchmarks/RESULTS.md, "Ensemble
# step"). Absent from builds without oneDNN.
_FUSED_LINEAR = (
    getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
)


def _onednn_bf16() -> bool:
    """Whether oneDNN has bfloat16 products on this CPU (AVX512-BF16 or AMX). Without them its fused
    kernel fails on bfloat16 inputs ("could not create a primitive descriptor"): precision="bfloat16"
    then takes the plain product below, which works everywhere."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return _FUSED_LINEAR is not None and probe is not None and bool(probe())
    except RuntimeError:
        return False


_FUSED_BF16 = _onednn_bf16()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, silu: bool) -> torch.Tensor:
    """``x @ weight.T + bias`` (``weight`` ``[out, in]``), then SiLU when ``silu``; no autograd, CPU."""
    fused_dtype = x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and _FUSED_BF16)
    if _FUSED_LINEAR is not None and fused_dtype and x.shape[-1] >= 64 and weight.shape[0] >= 16:
        return _FUSED_LINEAR(x, weight, bias, "swish" if silu else "none", [], "")
    # With few inputs or outputs MKL's product is as fast, and its call costs less than oneDNN's
    # (the output layer is faster through MKL: benchmarks/RESULTS.md).
    out = F.linear(x, weight, bias)
    return F.silu(out, inplace=True) if silu else out


def autocast_dtype(device_type: str) -> torch.dtype:
    """The product dtype the caller asked for with ``torch.autocast`` (float32 when not autocasting)."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.float32


def per_member(
    weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``[K, in, out]`` / ``[K, 1, out]`` -> lists of each member's ``[out, in]`` / ``[out]`` in
    ``dtype``, the layout :func:`linear` takes (no tensor indexing in the member loop)."""
    return list(weight.mT.contiguous().to(dtype)), list(bias.squeeze(1).to(dtype))


def cached_weights(owner: Any, tensors: Sequence[torch.Tensor], options: tuple, build: Callable[[], T]) -> T:
    """``build()``, kept on ``owner`` until one of ``tensors`` or ``options`` changes.

    A tensor counts as changed when its storage or version does: in-place updates bump a tensor's
    version, moving the model changes its storage. One prepared copy is kept at a time. Inference
    tensors (weights made under ``torch.inference_mode()`` other than by ``from_pretrained`` or
    ``create_world_model``) have no version to watch, so for them nothing is kept: ``build()`` runs
    on every call.
    """
    if any(t.is_inference() for t in tensors):
        return build()
    key = (*options, *((t.device, t.data_ptr(), t._version) for t in tensors))
    cached = owner.__dict__.get("_weight_cache")
    if cached is None or cached[0] != key:
        cached = owner.__dict__["_weight_cache"] = (key, build())
    return cached[1]


def forward_members(
    x: torch.Tensor, weights: list[tuple[list[torch.Tensor], list[torch.Tensor]]], hidden: int
) -> torch.Tensor:
    """Member ``k`` of ``weights`` (hidden layers with SiLU, then the output layer) on ``x[k]`` for
    ``x`` ``[K, N, in]``: member by member, in slices of rows whose activations (``hidden`` wide)
    stay in cache, each layer one fused product + SiLU (:func:`linear`). Returns ``[K, N, out]``."""
    members, batch = x.shape[0], x.shape[1]
    rows = max(256, _CPU_CHUNK_FLOATS // hidden)
    outputs = []
    for k in range(members):
        for start in range(0, batch, rows):
            h = x[k, start : start + rows]
            for weight, bias in weights[:-1]:
                h = linear(h, weight[k], bias[k], silu=True)
            weight, bias = weights[-1]
            outputs.append(linear(h, weight[k], bias[k], silu=False))
    return torch.cat(outputs).view(members, batch, -1)
