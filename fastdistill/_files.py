"""Files written whole or not at all (model files, checkpoints, caches, reports)."""
from __future__ import annotations

import os
import uuid
from typing import Callable, Union


def atomic_write(path: Union[str, os.PathLike], write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a fresh name beside ``path``, fsync it, rename it over ``path``, fsync the directory: a
    reader (or a crash) sees the old file or the whole new one, never a part; on failure the temporary file is
    removed and ``path`` is untouched. ``write`` creates the file itself (as ``open(tmp, "wb")`` would: mode 0o666
    filtered by the umask)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
