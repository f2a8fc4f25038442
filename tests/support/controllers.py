"""Real ``inferd controller`` processes for tests, and what to watch while they change hands.

Production runs the API and gateway (``inferd serve --no-controller``) apart from any number of
``inferd controller`` processes sharing one database; one holds the ``controller`` lease and
acts. These helpers start and signal such processes, read who leads (through ``inferd status
--json`` as an operator would, or straight from the lease row when a test polls often), and
watch the model-server processes of one installation on this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.replicas import process_exists
from tests.support.server import REPO, run_cli

OWNER_ENV = b"INFERD_RUNTIME_OWNER="
HANDLE_ENV = b"INFERD_REPLICA_HANDLE="


@dataclass
class Controller:
    """One ``inferd controller`` process; its log (JSON lines) is ``log_path``."""

    data_dir: Path
    database_url: str
    name: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    holder: str | None = None
    """Its lease holder id, ``hostname:pid:hex``, read from its ``controller started`` line."""

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"controller-{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"controller {self.name} was never started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 90) -> Controller:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "INFERD_LOG_FORMAT": "json", **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inferd", "controller",
             "--data-dir", str(self.data_dir), "--database-url", self.database_url],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
        )
        log.close()  # the child has its own descriptor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"inferd controller {self.name} exited early:\n{self.log_text()}")
            started = [e for e in self.entries() if e["message"].startswith("controller started")]
            if started:
                self.holder = started[-1]["message"].rsplit("lease holder ", 1)[1].rstrip(")")
                assert self.holder.split(":")[1] == str(self.pid), self.holder
                return self
            time.sleep(0.1)
        raise RuntimeError(f"inferd controller {self.name} did not start:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the process to end; its exit code (SIGKILL after ``timeout``)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"controller {self.name} ignored signal {sig} for {timeout} s") from None
        return int(self.process.returncode)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def entries(self) -> list[dict[str, Any]]:
        """The log's JSON entries (a line that is not JSON becomes ``{"message": line}``)."""
        found = []
        for line in self.log_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            found.append(entry if isinstance(entry, dict) and "message" in entry else {"message": line})
        return found

    def messages(self, prefix: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if str(e["message"]).startswith(prefix)]

    def became_leader_at(self) -> float | None:
        """Wall-clock time (epoch seconds) of its latest ``became leader`` line."""
        found = self.messages("became leader")
        if not found:
            return None
        return datetime.fromisoformat(found[-1]["time"].replace("Z", "+00:00")).timestamp()

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e.get("level") in ("error", "critical") or "Traceback" in e["message"]]


def status(data_dir: Path, database_url: str) -> dict[str, Any]:
    """``inferd status --json``, as an operator runs it."""
    return dict(json.loads(run_cli("status", "--json", data_dir=data_dir, database_url=database_url)))


def replica_records(data_dir: Path, database_url: str, instance_id: str) -> list[dict[str, Any]]:
    """``inferd replicas <instance> --json``."""
    document = json.loads(run_cli("replicas", instance_id, "--json", data_dir=data_dir, database_url=database_url))
    return list(document["replicas"])


def holder_pid(holder: str) -> int:
    return int(holder.split(":")[1])


class LeaseReader:
    """Reads the ``controller`` lease row directly: cheap enough to poll every 50 ms."""

    def __init__(self, database_url: str) -> None:
        from inferd.store.db import Database

        self.database = Database(database_url)

    def current(self) -> Any:
        from inferd.store import leases

        with self.database.session() as session:
            return leases.current(session, "controller")

    def leader(self) -> str | None:
        """The holder of an unexpired lease, or None."""
        from inferd.store.tables import utcnow

        view = self.current()
        if view is None or not view.holder or view.expires_at is None or view.expires_at <= utcnow():
            return None
        return str(view.holder)

    def wait_for_passes(self, holder: str, passes: int = 2, timeout: float = 30) -> None:
        """Wait until ``holder`` renewed its lease ``passes`` more times: each renewal is followed
        by a reconcile pass before the next, so ``passes >= 2`` means at least one full pass ran."""
        seen: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = self.current()
            if view is not None and view.holder == holder and (not seen or view.renewed_at != seen[-1]):
                seen.append(view.renewed_at)
                if len(seen) > passes:
                    return
            time.sleep(0.05)
        raise AssertionError(f"{holder} renewed its lease only {max(len(seen) - 1, 0)} times in {timeout} s")

    def close(self) -> None:
        self.database.dispose()


def owned_engines(owner: str) -> dict[str, list[int]]:
    """Every live model-server process of installation ``owner`` on this machine: handle → pids."""
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if OWNER_ENV + owner.encode() not in environ:
            continue
        handle = next((i[len(HANDLE_ENV):].decode() for i in environ if i.startswith(HANDLE_ENV)), None)
        if handle is not None and process_exists(int(entry.name)):
            found.setdefault(handle, []).append(int(entry.name))
    return found


def installation_owner(data_dir: Path, database_url: str) -> str:
    """The label inferd's local runtime gives this installation's processes."""
    from inferd.cli.bootstrap import runtime_owner
    from inferd.config import Settings

    return runtime_owner(Settings(data_dir=data_dir, database_url=database_url))


class EngineWatch:
    """Samples this installation's engines in the background, to catch a replica started twice
    (or restarted) even if it lived only between two looks."""

    def __init__(self, owner: str, interval: float = 0.1) -> None:
        self.owner = owner
        self.interval = interval
        self.samples: list[dict[str, tuple[int, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append({h: tuple(sorted(p)) for h, p in owned_engines(self.owner).items()})
            self._stop.wait(self.interval)

    def __enter__(self) -> EngineWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def seen(self) -> set[tuple[str, tuple[int, ...]]]:
        """Every (handle, pids) pair any sample held."""
        return {item for sample in list(self.samples) for item in sample.items()}

    def unexpected(self, expected: dict[str, int]) -> list[dict[str, tuple[int, ...]]]:
        """Samples that differ from ``expected`` (handle → its one pid)."""
        want = {h: (p,) for h, p in expected.items()}
        return [s for s in list(self.samples) if s != want]
