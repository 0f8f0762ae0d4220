"""Writing files and folders so that a crash never leaves a half-written one under the final name.

- :func:`write_text_atomic` / :func:`atomic_file`: the content goes to a temporary file in the same
  folder, is flushed to disk, and then takes the final name with :func:`os.replace` (one step: a
  reader sees the old file or the new one, never a mix).
- :func:`atomic_directory`: a folder is filled under a temporary sibling name and renamed into
  place when complete. Files of an existing folder that the new write does not produce are carried
  over (a model card's appended results, notes put there by hand). A folder cannot replace a
  non-empty one in one step, so the old one is first renamed aside and removed after the new one
  is in place; should a crash fall between the two renames, the next write (or
  :func:`recover_directory`) puts the old one back under its name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_directory", "atomic_file", "recover_directory", "save_torch_atomic", "write_text_atomic"]

log = logging.getLogger(__name__)

_PARTIAL = "partial"
_OLD = "old"


def _sibling(path: Path, kind: str) -> Path:
    """A hidden name next to ``path``: ``.NAME.KIND-PID-RANDOM``."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible everywhere (Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an error the file
    written there replaces ``path``, otherwise it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {path}")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if path.is_file():
            with contextlib.suppress(OSError):
                shutil.copymode(path, tmp)  # a rewrite keeps the file's permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` in one step (see :func:`atomic_file`); returns ``path``."""
    import torch  # only the writers of tensors need it

    path = Path(path)
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` in one step (see :func:`atomic_file`); returns ``path``."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _leftovers(path: Path, kind: str) -> list[tuple[Path, int]]:
    """Siblings of ``path`` named by :func:`_sibling` with ``kind``, with the writer's process id."""
    if not path.parent.is_dir():
        return []
    prefix = f".{path.name}.{kind}-"
    out = []
    for entry in path.parent.iterdir():
        if entry.name.startswith(prefix):
            pid = entry.name[len(prefix) :].partition("-")[0]
            out.append((entry, int(pid) if pid.isdigit() else -1))
    return out


def recover_directory(path: str | os.PathLike) -> bool:
    """Undo what a crash in the middle of :func:`atomic_directory` left next to ``path``.

    Temporary folders of writers that no longer run are removed; if ``path`` itself is missing
    but its previous version was renamed aside, that version is put back. Returns whether it was.
    """
    path = Path(path)
    for leftover, pid in _leftovers(path, _PARTIAL):
        if not _pid_alive(pid):
            log.warning("removing %s, left by an interrupted write of %s", leftover, path)
            shutil.rmtree(leftover, ignore_errors=True)
    restored = False
    for leftover, pid in sorted(_leftovers(path, _OLD), key=lambda e: e[0].stat().st_mtime, reverse=True):
        if _pid_alive(pid):
            continue
        if not path.exists():
            log.warning("putting back %s: a write of a new version was interrupted (%s)", path, leftover)
            os.replace(leftover, path)
            restored = True
        else:
            shutil.rmtree(leftover, ignore_errors=True)
    return restored


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, keep_other_files: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; fill it in the block. When the block ends
    without an error the folder takes the name ``path``; otherwise it is removed and ``path`` is
    left as it was.

    With ``keep_other_files``, entries of an existing ``path`` that the block did not write are
    carried over (hard-linked where possible, else copied) before the swap.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    tmp = _sibling(path, _PARTIAL)
    tmp.mkdir()
    try:
        yield tmp
        if path.is_dir():
            if keep_other_files:
                for entry in path.iterdir():
                    target = tmp / entry.name
                    if target.exists() or target.is_symlink():
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
                    elif entry.is_symlink():
                        os.symlink(os.readlink(entry), target)
                    else:
                        _link_or_copy(str(entry), str(target))
            old = _sibling(path, _OLD)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
