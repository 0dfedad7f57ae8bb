"""Checks of output paths, made before the work that fills them starts.

Every writer (``collect``, ``fit``, ``train-agent``, ``audit``, ``video`` ...) calls one of these
first, so a path that cannot be written (a file where a folder is needed, ``/dev/null``, a folder
without write permission) fails at once with a one-line
:class:`~worldflux_gym.core.errors.OutputPathError` instead of after minutes of work, and an
existing agent, report or video is not replaced unless the caller says so
(:class:`~worldflux_gym.core.errors.OutputExistsError`; ``overwrite=True``, ``--overwrite``).

Writability is tested by opening an anonymous temporary file in the folder (``O_TMPFILE`` where
the OS has it: no name ever appears), which is the only test that also holds for root, read-only
file systems and ACLs.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from worldflux_gym.core.errors import OutputExistsError, OutputPathError

OVERWRITE_HINT = "pass --overwrite (overwrite=True) to replace it, or choose another path"


def _kind(path: Path) -> str:
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _existing_ancestor(path: Path, name: str, shown: Path) -> Path:
    """The nearest folder at or above ``path`` that exists (a file on the way is an error)."""
    current = path
    while not os.path.lexists(current):
        if current.parent == current:
            break
        current = current.parent
    if not current.is_dir():
        raise OutputPathError(
            f"{name} {shown}: {current} is {_kind(current)}, so no folder can be made under it; "
            "choose a path inside a folder"
        )
    return current


def _check_writable(folder: Path, name: str, shown: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".worldflux-write-test-"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise OutputPathError(
            f"{name} {shown}: cannot write in {folder} ({reason}); choose a folder you can write to"
        ) from err


def check_output_dir(path: str | os.PathLike, name: str = "--out") -> Path:
    """``path`` as an output folder: an existing writable folder, or one that can be made there."""
    shown = Path(path)
    absolute = Path(os.path.abspath(shown))
    if os.path.lexists(absolute) and not absolute.is_dir():
        raise OutputPathError(
            f"{name} {shown} is {_kind(absolute)}, not a folder; give a folder path (made when missing)"
        )
    _check_writable(_existing_ancestor(absolute, name, shown), name, shown)
    return shown


def check_output_file(
    path: str | os.PathLike, name: str = "--out", *, overwrite: bool = False, what: str = "output"
) -> Path:
    """``path`` as an output file: its folder writable (or makeable), and the file itself either
    absent or a regular file that ``overwrite`` allows to replace. ``what`` names it in messages."""
    shown = Path(path)
    absolute = Path(os.path.abspath(shown))
    if os.path.lexists(absolute):
        if absolute.is_dir():
            raise OutputPathError(f"{name} {shown} is a folder; give the {what} file's path")
        if not absolute.is_file():
            raise OutputPathError(
                f"{name} {shown} is {_kind(absolute)}, not a regular file; give the {what} file's path"
            )
        if not overwrite:
            raise OutputExistsError(f"{name} {shown}: the {what} already exists; {OVERWRITE_HINT}")
    _check_writable(_existing_ancestor(absolute.parent, name, shown), name, shown)
    return shown


def check_not_replacing(
    paths: list[Path], name: str, shown: str | os.PathLike, what: str, overwrite: bool
) -> None:
    """Refuse (unless ``overwrite``) when any of ``paths`` exists: an earlier output would be replaced."""
    if overwrite:
        return
    existing = [p for p in paths if os.path.lexists(p)]
    if existing:
        raise OutputExistsError(f"{name} {shown} already holds {what} ({existing[0]}); {OVERWRITE_HINT}")
