"""Writing files so that a reader never sees half of one, and the fault hook that tests crashes.

Every file a run writes goes through ``write_atomic``. Tests set the environment variable
``TMIX_FAULT_AT_WRITE`` to ``kill:N`` (the process SIGKILLs itself at its N-th write, after the
temporary file is written and before the rename: the worst moment) or ``enospc:N`` (the N-th
write fails as on a full disk) to check that a run survives a crash at any write.
"""
from __future__ import annotations

import errno
import hashlib
import os
import signal
import uuid
from pathlib import Path
from typing import Callable

FAULT_ENV = "TMIX_FAULT_AT_WRITE"
_writes = 0


def _fault_point(path: Path) -> None:
    """Count one write; kill the process or fail the write when ``TMIX_FAULT_AT_WRITE`` says so."""
    global _writes
    _writes += 1
    fault = os.environ.get(FAULT_ENV)
    if not fault:
        return
    kind, _, number = fault.partition(":")
    if not number.isdigit() or kind not in ("kill", "enospc"):
        raise ValueError(f"{FAULT_ENV}: expected 'kill:N' or 'enospc:N', got {fault!r}")
    if int(number) != _writes:
        return
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(errno.ENOSPC, f"No space left on device (injected by {FAULT_ENV}={fault})", str(path))


def reset_write_count() -> None:
    """Start counting writes from zero again (for tests that inject faults in-process)."""
    global _writes
    _writes = 0


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
        _fault_point(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Delete the temporary files that ``write_atomic`` leaves in ``directory`` when a process is killed."""
    for path in Path(directory).glob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
