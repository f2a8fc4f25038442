"""Replica log rotation (``inferd.runtime.logfiles``) on real files: copy-truncate with one older
generation, an ``O_APPEND`` writer that keeps writing at the new end, reading across both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inferd.runtime import logfiles


def lines(count: int, *, tag: str = "line", width: int = 40) -> bytes:
    return b"".join(f"{tag} {i:06d} ".ljust(width, "x").encode() + b"\n" for i in range(count))


def test_nothing_happens_below_half_the_cap(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    log.write_bytes(lines(10))  # 410 bytes
    assert not logfiles.rotate(log, 1024)
    assert log.read_bytes() == lines(10)
    assert not logfiles.older(log).exists()
    assert not logfiles.rotate(tmp_path / "missing.log", 1024)


def test_rotation_keeps_the_last_part_from_a_line_start_and_truncates(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    content = lines(100)  # 4100 bytes
    log.write_bytes(content)
    assert logfiles.rotate(log, 2048)
    kept = logfiles.older(log).read_bytes()
    assert log.read_bytes() == b""
    assert 0 < len(kept) <= 1024
    assert content.endswith(kept) and kept.startswith(b"line ")  # a whole line first, the newest last
    assert kept.endswith(b"line 000099 ".ljust(40, b"x") + b"\n")
    assert not (tmp_path / "r.log.1.tmp").exists()


def test_the_older_generation_is_replaced_so_the_total_stays_within_the_cap(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    cap = 4096
    with open(log, "ab") as engine:  # what the runtime gives the engine as stdout
        for round_ in range(20):
            engine.write(lines(60, tag=f"r{round_:02d}"))
            engine.flush()
            logfiles.rotate(log, cap)
            assert log.stat().st_size + logfiles.older(log).stat().st_size <= cap
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.log", "r.log.1"]
    assert b"r19" in logfiles.older(log).read_bytes() and b"r18" not in logfiles.older(log).read_bytes()


def test_an_append_mode_writer_continues_at_the_new_end(tmp_path: Path) -> None:
    """Why engines' logs are opened with O_APPEND: after the truncation their next write lands at
    offset 0, not at the old offset (which would leave a file of NUL bytes, as big as before)."""
    log = tmp_path / "r.log"
    with open(log, "ab") as engine:
        engine.write(lines(100))
        engine.flush()
        assert logfiles.rotate(log, 2048)
        engine.write(b"after the rotation\n")
        engine.flush()
    assert log.read_bytes() == b"after the rotation\n"

    plain = tmp_path / "plain.log"  # the counter-example: a writer without O_APPEND
    fd = os.open(plain, os.O_WRONLY | os.O_CREAT)
    os.write(fd, lines(100))
    logfiles.rotate(plain, 2048)
    os.write(fd, b"after\n")
    os.close(fd)
    assert plain.read_bytes().startswith(b"\0")


def test_one_line_longer_than_the_cap_is_cut_not_lost(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    log.write_bytes(b"y" * 5000)  # no newline at all
    assert logfiles.rotate(log, 2048)
    assert logfiles.older(log).read_bytes() == b"y" * 1024
    assert log.read_bytes() == b""


def test_tail_reads_across_the_two_generations(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    log.write_bytes(lines(100))
    logfiles.rotate(log, 2048)
    with open(log, "ab") as engine:
        engine.write(b"newest\n")
    tail = logfiles.tail(log, lines=3).splitlines()
    assert tail[-1] == "newest" and tail[-2].startswith("line 000099") and len(tail) == 3
    assert logfiles.tail(tmp_path / "missing.log") == ""


def test_tail_since_an_offset_ignores_an_earlier_run(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    log.write_bytes(b"earlier run: fine\n")
    start = log.stat().st_size
    with open(log, "ab") as engine:
        engine.write(b"this run: failed\n")
    assert logfiles.tail(log, since=start) == "this run: failed"
    assert logfiles.tail(log, since=start + 10_000) == "earlier run: fine\nthis run: failed"  # truncated since: all is newer


def test_discard_removes_both_generations_and_the_empty_directory(tmp_path: Path) -> None:
    directory = tmp_path / "instance"
    directory.mkdir()
    log, other = directory / "a.log", directory / "b.log"
    log.write_bytes(lines(100))
    logfiles.rotate(log, 2048)
    other.write_bytes(b"x\n")
    logfiles.discard(log)
    assert sorted(p.name for p in directory.iterdir()) == ["b.log"]
    logfiles.discard(other)
    assert not directory.exists()
    logfiles.discard(other)  # twice is fine


@pytest.mark.parametrize(("value", "expected"), [
    (None, logfiles.DEFAULT_MAX_BYTES), ("65536", 65536), ("12", logfiles.MIN_MAX_BYTES), ("lots", logfiles.DEFAULT_MAX_BYTES),
])
def test_the_cap_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: int) -> None:
    if value is None:
        monkeypatch.delenv(logfiles.MAX_BYTES_ENV, raising=False)
    else:
        monkeypatch.setenv(logfiles.MAX_BYTES_ENV, value)
    assert logfiles.max_bytes_from_env() == expected
