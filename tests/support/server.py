"""A real ``inferd serve`` process for tests: its own data dir, port and database."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(*args: str, data_dir: Path, database_url: str) -> str:
    """Run an ``inferd`` command like an operator would; return its stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "inferd", *args, "--data-dir", str(data_dir), "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise RuntimeError(f"inferd {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


@dataclass
class Server:
    data_dir: Path
    database_url: str
    env: dict[str, str] = field(default_factory=dict)
    controller: bool = False
    """API-contract tests run the API alone (as production runs it, apart from the controller)."""
    gateway: bool = False
    port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    private_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "api-ca.pem"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def start(self, timeout: float = 60) -> Server:
        self.log_path = self.data_dir / "server.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "INFERD_METRICS_PORT": str(self.metrics_port), **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "inferd", "serve",
                "--data-dir", str(self.data_dir),
                "--database-url", self.database_url,
                "--port", str(self.port),
                "--controller" if self.controller else "--no-controller",
                *(["--gateway", "--gateway-port", str(self.gateway_port), "--private-port", str(self.private_port)]
                  if self.gateway else ["--no-gateway"]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"inferd serve exited early:\n{self.log_path.read_text()}")
            try:
                if self.ca_file.exists() and httpx.get(f"{self.url}/healthz", verify=self.ssl_context(), timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"inferd serve did not become ready:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> Server:
        self.stop()
        return self.start()

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), headers=headers, timeout=30, **kwargs)

    def cli(self, *args: str) -> str:
        return run_cli(*args, data_dir=self.data_dir, database_url=self.database_url)

    def new_team(self, name: str) -> str:
        """Create a team and a full-access token for it; return the token."""
        self.cli("admin", "team", "create", name)
        return self.token(name)

    def token(self, team: str, *scopes: str) -> str:
        args = ["admin", "token", "create", "--team", team]
        for scope in scopes or ("*",):
            args += ["--scope", scope]
        return self.cli(*args)

    def pydo(self, token: str) -> Any:
        import pydo

        return pydo.Client(token=token, endpoint=self.url, connection_verify=str(self.ca_file))
