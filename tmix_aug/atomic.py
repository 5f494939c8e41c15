"""Writing files so that a reader never sees half of one."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def write_atomic(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Write through ``write(tmp_path)`` to a temporary name beside ``path``, then rename.

    Returns:
        ``path`` as a ``Path``. On any error the temporary file is removed and ``path`` is
        left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # default permissions, unlike mkstemp
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
