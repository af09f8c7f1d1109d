"""Files written whole or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Callable, Union


def atomic_write(path: Union[str, os.PathLike], write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, fsync, then rename it over ``path``: a reader sees the old
    file or the new one, never a part; on failure the temporary file is removed and ``path`` is untouched."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
