"""A fake Hugging Face hub: a real ``http.server`` on 127.0.0.1 for download tests.

It imitates the two hub endpoints inferd uses (``/api/models/{repo}/revision/{rev}`` and
``/{repo}/resolve/{rev}/{file}``), checks bearer tokens, answers with the hub's error codes,
and redirects downloads to a "CDN" on another origin (``localhost`` vs ``127.0.0.1``), as the
real hub does. Every request is logged as ``(path, Authorization header)``.

A repo's files are ``bytes`` in ``Repo.files``, or real files on disk in ``Repo.paths``
(streamed from disk, e.g. the packaged SmolLM2 GGUF). Downloads can be throttled, per hub or
per repo, so that a download of a real file takes a few seconds: that is the server being
slow, the tests still wait on conditions (``bytes_sent`` and ``finished`` show its progress).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

GOOD_TOKEN = "hf_goodTOKEN0123456789"
BAD_TOKEN = "hf_wrongTOKEN9876543210"

SEND_CHUNK_BYTES = 64 * 1024


def payload(name: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes, different per file name."""
    return random.Random(name).randbytes(size)


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    lie_about_size: set[str] = field(default_factory=set)  # listing claims one byte more
    understate_size: set[str] = field(default_factory=set)  # listing claims one byte less
    hide_size: set[str] = field(default_factory=set)  # listing gives no size
    paths: dict[str, Path] = field(default_factory=dict)
    """Files served from a real file on disk (file name → its path), next to ``files``."""
    listed_size: dict[str, int] = field(default_factory=dict)
    """Sizes the listing claims instead of the real ones (a "50 GB" file that is never sent)."""
    bytes_per_second: float | None = None
    """Throttle for this repo's downloads; None: the hub's."""

    def names(self) -> list[str]:
        return [*self.files, *self.paths]

    def size(self, name: str) -> int:
        return self.paths[name].stat().st_size if name in self.paths else len(self.files[name])

    def chunks(self, name: str) -> Iterator[bytes]:
        if name in self.paths:
            with self.paths[name].open("rb") as handle:
                while chunk := handle.read(SEND_CHUNK_BYTES):
                    yield chunk
        else:
            data = self.files[name]
            for start in range(0, len(data), SEND_CHUNK_BYTES):
                yield data[start:start + SEND_CHUNK_BYTES]


class FakeHub:
    """The server, its repos, and the request log. ``with FakeHub(repos) as hub:`` runs it."""

    def __init__(self, repos: Mapping[str, Repo], *, bytes_per_second: float | None = None) -> None:
        self.repos = repos
        self.bytes_per_second = bytes_per_second
        """Throttle for every download (unless its repo has its own); None: as fast as it goes."""
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self.bytes_sent: dict[str, int] = {}  # "org/name/file" → body bytes the CDN has sent
        self.finished: list[tuple[str, int]] = []  # ("org/name/file", bytes) of each CDN response that ended
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> FakeHub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def paths(self, kind: str) -> list[str]:
        with self.lock:
            return [p for p, _ in self.requests if kind in p]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                auth = self.headers.get("Authorization")
                with hub.lock:
                    hub.requests.append((self.path, auth))
                path = unquote(urlsplit(self.path).path)
                if path.startswith("/cdn/"):
                    return self._cdn(path.removeprefix("/cdn/"))
                if path.startswith("/api/models/"):
                    repo, _, revision = path.removeprefix("/api/models/").partition("/revision/")
                    return self._listing(repo, revision, auth)
                repo_part, sep, rest = path.lstrip("/").partition("/resolve/")
                if sep:
                    revision, _, name = rest.partition("/")
                    return self._resolve(repo_part, revision, name, auth)
                self._error(404, "EntryNotFound")

            def _access(self, repo: str, auth: str | None) -> Repo | None:
                found = hub.repos.get(repo)
                if found is None:
                    self._error(404, "RepoNotFound")
                    return None
                if found.gated and auth != f"Bearer {GOOD_TOKEN}":
                    self._error(401 if auth is None else 403, "GatedRepo")
                    return None
                return found

            def _listing(self, repo: str, revision: str, auth: str | None) -> None:
                found = self._access(repo, auth)
                if found is None:
                    return
                siblings: list[dict[str, object]] = [
                    {"rfilename": name} if name in found.hide_size else
                    {"rfilename": name,
                     "size": found.listed_size.get(name, found.size(name))
                     + (name in found.lie_about_size) - (name in found.understate_size)}
                    for name in found.names()
                ]
                self._send(200, json.dumps({"id": repo, "sha": "0" * 40, "siblings": siblings}).encode(),
                           "application/json")

            def _resolve(self, repo: str, revision: str, name: str, auth: str | None) -> None:
                found = self._access(repo, auth)
                if found is None:
                    return
                if name not in found.names():
                    return self._error(404, "EntryNotFound")
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{hub.port}/cdn/{repo}/{name}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _cdn(self, key: str) -> None:
                org, name_, rest = key.split("/", 2)
                repo = hub.repos[f"{org}/{name_}"]
                rate = repo.bytes_per_second or hub.bytes_per_second
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(repo.size(rest)))
                self.end_headers()
                started, sent = time.monotonic(), 0
                try:
                    for chunk in repo.chunks(rest):
                        if rate:  # a slow CDN: no byte before its time
                            ahead = started + sent / rate - time.monotonic()
                            if ahead > 0:
                                time.sleep(ahead)
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        with hub.lock:
                            hub.bytes_sent[key] = hub.bytes_sent.get(key, 0) + len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a cancelled download)
                finally:
                    with hub.lock:
                        hub.finished.append((key, sent))

            def _error(self, status: int, code: str) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                body = json.dumps({"error": code}).encode()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
