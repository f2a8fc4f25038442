"""A real multi-node Ray cluster on one machine, for tests.

Every node is a ``ray start --block`` child process in a process group of its own, with its own
loopback address (head 127.0.0.1, workers 127.0.0.2, 127.0.0.3, …), temp dir, model cache and
replica log dir, so one node can be lost on its own: ``stop_worker(i)`` SIGKILLs that node's
process group, as a machine that loses power would, and then checks that every process the
node had (raylet, Ray workers, and the engines under its actors) is gone.

Ray binds some of its servers to every interface, so this refuses to run outside a private
network namespace (``scripts/in-netns.sh``), where loopback is the only interface there is.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HEAD_IP = "127.0.0.1"
CPU_SLOT = "inferd-cpu-slot"
OBJECT_STORE_BYTES = 100 * 1024 * 1024

_NODES_SCRIPT = """
import json, sys
from ray._raylet import GcsClient
infos = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=5)
print(json.dumps([[i.node_manager_address, i.state == 0] for i in infos.values()]))
"""


def in_private_netns() -> bool:
    """True when loopback is the only network interface with an address (a private namespace)."""
    try:
        out = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    names = {line.split()[1].rstrip(":") for line in out.splitlines() if line.strip()}
    return names == {"lo"}


def free_port(host: str = HEAD_IP) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``: pid → start time (so a reused pid is not mistaken for it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(raw[raw.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            stat = _stat(child)
            if stat and stat[0] not in "ZX":
                found[child] = stat[1]
                todo.append(child)
    return found


def process_tree(root: int) -> dict[int, str]:
    """``root`` and every live process below it: pid → start time."""
    return {root: (_stat(root) or ("", ""))[1], **descendants(root)}


def still_alive(processes: dict[int, str]) -> dict[int, str]:
    """Those of ``processes`` still running (same pid *and* start time)."""
    alive = {}
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat and stat[0] not in "ZX" and stat[1] == started:
            try:
                alive[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
            except OSError:
                continue
    return alive


@dataclass
class Node:
    ip: str
    process: subprocess.Popen[bytes]
    directory: Path
    log: Path
    stopped: bool = False
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def cache_dir(self) -> Path:
        return self.directory / "models"

    @property
    def log_dir(self) -> Path:
        return self.directory / "replica-logs"


class RayCluster:
    def __init__(self, tmp_dir: Path, *, ray_bin: Path | None = None) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.ray_bin = ray_bin or Path(sys.executable).parent / "ray"
        self.port = 0
        self.head: Node | None = None
        self.workers: list[Node] = []
        self.started_in_s = 0.0
        self.head_resources: dict[str, float] = {CPU_SLOT: 2.0}
        self._launches = 0
        self._ray_tmp: Path | None = None  # Ray's session dirs: short, as Unix socket paths are limited to 107 bytes

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.port}"

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle --------------------------------------------------------------------------
    def start(
        self, workers: int = 1, *, head_resources: dict[str, float] | None = None, worker_resources: dict[str, float] | None = None
    ) -> RayCluster:
        """Head plus ``workers`` worker nodes; each node has 2 CPUs and ``{CPU_SLOT: 2}`` unless the resources say otherwise."""
        if not in_private_netns():
            raise RuntimeError("RayCluster runs only in a private network namespace: use scripts/in-netns.sh")
        began = time.monotonic()
        self.port = free_port()
        self.head_resources = {CPU_SLOT: 2.0, **(head_resources or {})}
        atexit.register(self.stop)
        try:
            self.head = self._launch_head()
            for _ in range(workers):
                self.workers.append(self._launch(self._next_ip(), ["--address", self.address], {CPU_SLOT: 2.0, **(worker_resources or {})}))
            self.wait_nodes({node.ip for node in [self.head, *self.workers]})
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - began
        return self

    def add_worker(self, resources: dict[str, float] | None = None, *, wait: bool = True) -> int:
        """A new worker node at the next loopback address (``{CPU_SLOT: 2}`` unless ``resources`` says otherwise)."""
        node = self._launch(self._next_ip(), ["--address", self.address], {CPU_SLOT: 2.0, **(resources or {})})
        self.workers.append(node)
        if wait:
            self.wait_nodes({node.ip})
        return len(self.workers) - 1

    def stop_worker(self, index: int, *, timeout: float = 30.0) -> None:
        """Lose worker ``index`` at once (SIGKILL to its process group); fail if any of its processes survive."""
        self._kill(self.workers[index], timeout)

    def stop_head(self, *, timeout: float = 30.0) -> None:
        """Lose the head (GCS and the head's raylet) as ``stop_worker`` loses a worker."""
        assert self.head is not None
        self._kill(self.head, timeout)

    def restart_head(self) -> None:
        """A new head on the same address (a new, empty cluster: Ray keeps no state without GCS FT)."""
        assert self.head is not None and self.head.stopped
        self.head = self._launch_head()
        self.wait_nodes({HEAD_IP})

    def stop(self) -> None:
        problems = []
        for node in [*self.workers, *([self.head] if self.head else [])]:
            try:
                self._kill(node, 30.0)
            except AssertionError as exc:
                problems.append(str(exc))
        if self._ray_tmp is not None:
            shutil.rmtree(self._ray_tmp, ignore_errors=True)
        if problems:
            raise AssertionError("; ".join(problems))

    # -- questions --------------------------------------------------------------------------
    def node_table(self) -> list[tuple[str, bool]]:
        """(address, alive) of every node the head knows (asked from a separate process)."""
        try:
            result = subprocess.run([sys.executable, "-c", _NODES_SCRIPT, self.address], capture_output=True, text=True,
                                    timeout=30, env={**os.environ, "RAY_BACKEND_LOG_LEVEL": "fatal"})
        except subprocess.TimeoutExpired:
            return []  # no head answering
        if result.returncode != 0:
            return []
        return [(address, alive) for address, alive in json.loads(result.stdout.strip().splitlines()[-1])]

    def alive_node_addresses(self) -> set[str]:
        return {address for address, alive in self.node_table() if alive}

    def wait_nodes(self, addresses: set[str], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not addresses <= self.alive_node_addresses():
            for node in [self.head, *self.workers]:
                if node and not node.stopped and node.process.poll() is not None:
                    raise RuntimeError(f"ray node {node.ip} exited:\n{node.log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray nodes {sorted(addresses)} did not join within {timeout} s")
            time.sleep(0.3)

    # -- internals --------------------------------------------------------------------------
    def _launch_head(self) -> Node:
        return self._launch(HEAD_IP, ["--head", "--port", str(self.port), "--include-dashboard=false"], self.head_resources)

    def _next_ip(self) -> str:
        return f"127.0.0.{len(self.workers) + 2}"

    def _launch(self, ip: str, args: list[str], resources: dict[str, float]) -> Node:
        directory = self.tmp_dir / f"node-{ip}"
        directory.mkdir(parents=True, exist_ok=True)
        if self._ray_tmp is None:
            self._ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self._launches += 1  # a fresh temp dir each time: a restarted head must not find the old one's files
        log = directory / "ray-start.log"
        env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "INFERD_MODEL_CACHE_DIR": str(directory / "models"),
            "INFERD_REPLICA_LOG_DIR": str(directory / "replica-logs"),
            # a lost node is noticed in seconds, not after the default 5 × 3 s of missed checks
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        argv = [
            str(self.ray_bin), "start", "--block", *args, "--node-ip-address", ip, "--num-cpus", "2",
            "--resources", json.dumps(resources), "--temp-dir", str(self._ray_tmp / f"{ip}-{self._launches}"),
            "--disable-usage-stats",
            "--dashboard-agent-listen-port", str(free_port(ip)), "--object-store-memory", str(OBJECT_STORE_BYTES),
        ]
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                       start_new_session=True)
        return Node(ip, process, directory, log, resources=resources)

    def _kill(self, node: Node, timeout: float) -> None:
        if node.stopped:
            return
        node.stopped = True
        processes = process_tree(node.process.pid)
        # the node's group: ray start, GCS, raylet, agents; Ray workers (each in a group of their own)
        # must die because their raylet did, and engines because their actor did
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while (alive := still_alive(processes)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive:
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"node {node.ip}: processes outlived their node: {alive}")
