"""A replica's engine log on its node: bounded by copy-truncate rotation, removed with the replica.

Engines write to their log file directly (``stdout``/``stderr`` of the process, opened with
``O_APPEND``): they must outlive the controller that started them, so no pipe through a Python
thread may sit in between. The runtime keeps each log within a size cap from the outside, where
it already looks at its replicas regularly (every reconcile pass asks for their state):

- when ``<replica>.log`` grows past half the cap, its last half-cap bytes (from a line start)
  become ``<replica>.log.1`` (the one older generation, replaced each time) and ``<replica>.log``
  is truncated to zero. The engine's descriptor has ``O_APPEND``, so its next write lands at the
  new end of the file, not at its old offset (no sparse file);
- so one replica's logs take at most the cap on disk, plus what the engine writes between two
  looks (a reconcile pass, 0.5 s by default).

As with logrotate's ``copytruncate``, lines written between the copy and the truncation are lost;
the window is the time of one ``ftruncate`` after the read (microseconds).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

MAX_BYTES_ENV = "INFERD_REPLICA_LOG_MAX_BYTES"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MIN_MAX_BYTES = 1024


def max_bytes_from_env() -> int:
    """The cap from ``INFERD_REPLICA_LOG_MAX_BYTES`` (the controller's setting of that name, or a
    Ray node's environment), else 10 MiB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    try:
        value = int(raw) if raw else DEFAULT_MAX_BYTES
    except ValueError:
        value = DEFAULT_MAX_BYTES
    return max(MIN_MAX_BYTES, value)


def older(path: Path) -> Path:
    """The previous generation of a log: ``<replica>.log.1``."""
    return path.with_name(path.name + ".1")


def rotate(path: Path, max_bytes: int) -> bool:
    """Keep ``path`` and its one older generation within ``max_bytes`` together; True if it rotated.

    Cheap when there is nothing to do (one ``stat``). Never raises for a missing file.
    """
    keep = max(1, max_bytes // 2)
    try:
        if path.stat().st_size <= keep:
            return False
        with open(path, "r+b") as log:
            size = os.fstat(log.fileno()).st_size
            start = max(0, size - keep)
            log.seek(start)
            data = log.read()  # to the current end: includes what was written since the stat
            log.truncate(0)  # right after the read: the engine's next write starts the new file
    except FileNotFoundError:
        return False
    if start > 0:  # start the older generation at a whole line where there is one
        cut = data.find(b"\n")
        if 0 <= cut < len(data) - 1:
            data = data[cut + 1 :]
    temporary = path.with_name(path.name + ".1.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, older(path))
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return True


def tail(path: Path, lines: int = 8, max_bytes: int = 16_384, *, since: int = 0) -> str:
    """The last ``lines`` non-blank lines of a log (reading at most ``max_bytes``), continued from
    its older generation when the current one was rotated recently. ``since``: ignore what the
    file held before that offset (an earlier run's lines), unless it has been truncated since."""
    text, truncated = _read_end(path, max_bytes, since=since)
    if len(text) < max_bytes and (since == 0 or truncated):
        text = _read_end(older(path), max_bytes - len(text))[0] + text
    decoded = text.decode(errors="replace")
    return "\n".join(line for line in decoded.splitlines()[-lines:] if line.strip())


def _read_end(path: Path, max_bytes: int, *, since: int = 0) -> tuple[bytes, bool]:
    """The end of a file, not before ``since``; and whether the file is shorter than ``since``."""
    if max_bytes <= 0:
        return b"", False
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            truncated = since > size
            handle.seek(max(0 if truncated else since, size - max_bytes))
            return handle.read(max_bytes), truncated
    except OSError:
        return b"", False


def discard(path: Path) -> None:
    """Remove a replica's log (both generations) and its instance's directory once empty."""
    for candidate in (path, older(path), path.with_name(path.name + ".1.tmp")):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()
