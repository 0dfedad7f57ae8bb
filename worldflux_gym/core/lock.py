"""One writer per directory: an exclusive lock held by the process that writes an episode store, a
fit run, a Dyna run or a fine-tune output.

The lock is an OS lock (``flock`` on POSIX, ``LockFileEx`` on Windows, through the ``filelock``
package) on ``DIR/.worldflux.lock``: the OS releases it when its holder exits, even under
``kill -9``, so a stale lock never blocks a rerun. Who holds it (command, pid, host, since when) is
written beside it in ``DIR/.worldflux.lock.json`` so that a refused writer can say whom it waits
for. Readers never take the lock and never write anything.

A second writer is refused with :class:`ConcurrentWriterError`, at once unless it was given
``wait`` seconds to wait for another process to let go; a writer that waits holds up no other lock
of its own process. Within one thread a lock taken with ``reentrant=True`` may be taken again
(``fit_world_model`` holds its run directory while the trainer inside it takes the same lock); a
second holder in another thread, or any second holder of a non-reentrant lock (two
:class:`EpisodeStore` writers), is refused too.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from worldflux_gym.core.errors import ConcurrentWriterError

LOCK_FILE = ".worldflux.lock"
OWNER_FILE = ".worldflux.lock.json"
LOCK_FILES = frozenset({LOCK_FILE, OWNER_FILE})  # what a lock leaves in the directory it guards


@dataclass
class _Held:
    lock: FileLock
    thread: int
    reentrant: bool
    what: str
    count: int = 1


_HELD: dict[str, _Held] = {}  # this process's locks, by directory
_GUARD = threading.Lock()


def _owner_text(directory: Path) -> str:
    """Who holds the lock of ``directory``, as its holder wrote it (best effort)."""
    try:
        owner = json.loads((directory / OWNER_FILE).read_text())
        command = " ".join(str(owner.get("command", "")).split())  # one line, whatever argv held
        command = command if len(command) <= 100 else command[:97] + "..."
        return (
            f"{owner.get('what', 'a writer')} (pid {owner.get('pid')} on {owner.get('host')}, "
            f"since {owner.get('since')}: `{command}`)"
        )
    except (OSError, ValueError, AttributeError):  # not written yet, or torn: say what we know
        return "another process"


class WriterLock:
    """The writer lock of ``directory`` (created if missing). ``what`` says who writes, for the
    message a refused writer gets (e.g. ``"worldflux-gym collect CartPole-v1"``).

    >>> with WriterLock("runs/walker", "fit ensemble:default"):
    ...     ...  # write
    """

    def __init__(self, directory: str | Path, what: str, reentrant: bool = False, wait: float = 0.0):
        self.directory = Path(directory)
        self.what = what
        self.reentrant = reentrant
        self.wait = wait  # seconds to wait for another process's lock before giving up
        self._key: str | None = None

    @property
    def held(self) -> bool:
        return self._key is not None

    def acquire(self) -> WriterLock:
        """Take the lock (waiting up to ``wait`` seconds for another process to release it), or
        raise :class:`ConcurrentWriterError` naming the other writer."""
        if self._key is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        key = os.path.normcase(str(self.directory.resolve()))
        me = threading.get_ident()
        with _GUARD:
            held = _HELD.get(key)
            if held is not None:
                if held.reentrant and self.reentrant and held.thread == me:
                    held.count += 1
                    self._key = key
                    return self
                where = "this thread" if held.thread == me else "another thread of this process"
                raise ConcurrentWriterError(
                    f"{self.directory} is already being written by {held.what} in {where}; "
                    "one writer at a time: close the other writer first, or use another directory"
                )
            # Claimed for this thread before the OS lock is ours, so that the wait below happens
            # outside the guard: other threads may take other locks meanwhile, not this one.
            lock = FileLock(str(self.directory / LOCK_FILE), timeout=self.wait, thread_local=False)
            _HELD[key] = _Held(lock, me, self.reentrant, self.what)
        try:
            lock.acquire()
        except BaseException as error:
            with _GUARD:
                del _HELD[key]
            if isinstance(error, Timeout):
                raise ConcurrentWriterError(
                    f"{self.directory} is already being written by {_owner_text(self.directory)}; one "
                    "writer at a time: wait for it to finish (or stop it), or use another directory"
                ) from None
            raise
        self._key = key
        owner = {
            "what": self.what,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with contextlib.suppress(OSError):  # only informative: a read-only owner file must not stop us
            (self.directory / OWNER_FILE).write_text(json.dumps(owner) + "\n")
        return self

    def release(self) -> None:
        if self._key is None:
            return
        key, self._key = self._key, None
        with _GUARD:
            held = _HELD.get(key)
            if held is None:
                return
            held.count -= 1
            if held.count > 0:
                return
            del _HELD[key]
            # the owner file goes first, while the lock is still ours: never another holder's file
            with contextlib.suppress(OSError):
                (self.directory / OWNER_FILE).unlink()
            held.lock.release()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have torn down the modules
            self.release()
