"""The control-plane API over HTTPS, and its failures as one line a user can act on."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from inferd import __version__

BASE = "/v2/dedicated-inferences"
PAGE_SIZE = 200


@dataclass(frozen=True)
class Connection:
    api_url: str
    token: str
    ca_file: str | None = None


class ApiError(Exception):
    """A non-2xx answer, with what DigitalOcean's error body says (``id``, ``message``, ``request_id``)."""

    def __init__(self, status: int, error_id: str, message: str, request_id: str | None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.error_id, self.message, self.request_id = status, error_id, message, request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = f"HTTP {self.status} {self.error_id}: {self.message}"
        return text + (f" (request_id: {self.request_id})" if self.request_id else "")


class Unreachable(Exception):
    """No HTTP answer at all: refused connection, bad TLS, DNS, timeout."""


def verify_for(ca_file: str | None) -> ssl.SSLContext | bool:
    """The API's own CA when given; the system's trust store otherwise."""
    if ca_file:
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise Unreachable(f"cannot load CA file {ca_file}: {exc}") from exc
    return True


def describe_transport(url: str, exc: httpx.TransportError) -> str:
    """One line for a connection failure; TLS failures say how to fix them."""
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc.__cause__, ssl.SSLCertVerificationError):
        return f"TLS verification of {url} failed ({text}); pass the API's CA with --ca-file"
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer in time"
    return f"cannot reach {url}: {text}"


def error_from(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    retry = response.headers.get("retry-after")
    return ApiError(
        response.status_code,
        str(body.get("id") or response.reason_phrase or "error").replace(" ", "_").lower(),
        " ".join(str(body.get("message") or " ".join(response.text.split())[:200] or response.reason_phrase).split()),  # one line
        body.get("request_id") or response.headers.get("x-request-id"),
        float(retry) if retry and retry.isdigit() else None,
    )


class ApiClient:
    """A thin client: JSON in, JSON out, ``ApiError``/``Unreachable`` for everything else."""

    def __init__(self, connection: Connection, *, timeout: float = 30) -> None:
        self.connection = connection
        self._http = httpx.Client(
            base_url=connection.api_url.rstrip("/"),
            verify=verify_for(connection.ca_file),
            headers={"Authorization": f"Bearer {connection.token}", "User-Agent": f"inferd-cli/{__version__}"},
            timeout=timeout,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise Unreachable(describe_transport(self.connection.api_url, exc)) from exc
        if response.status_code >= 400:
            raise error_from(response)
        if not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None} or None)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def all_pages(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paginated list, following pages until ``meta.total`` is reached."""
        return list(self._iter_pages(path, key, params))

    def _iter_pages(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        page, seen = 1, 0
        while True:
            body = self.get(path, page=page, per_page=PAGE_SIZE, **params)
            items = body.get(key) or []
            yield from items
            seen += len(items)
            total = (body.get("meta") or {}).get("total", seen)
            if not items or seen >= total:
                return
            page += 1

    # -- the operations, by name -------------------------------------------------------------
    def instance(self, instance_id: str) -> dict[str, Any]:
        return dict(self.get(f"{BASE}/{instance_id}")["dedicated_inference"])

    def accelerators(self, instance_id: str) -> list[dict[str, Any]]:
        return self.all_pages(f"{BASE}/{instance_id}/accelerators", "accelerators")

    def sizes(self) -> dict[str, Any]:
        return dict(self.get(f"{BASE}/sizes"))

    def models(self) -> list[dict[str, Any]]:
        return list(self.get(f"{BASE}/gpu-model-config").get("gpu_model_configs") or [])

    def ca_pem(self, instance_id: str) -> str:
        return base64.b64decode(self.get(f"{BASE}/{instance_id}/ca")["cert"]).decode()

    def create_token(self, instance_id: str, name: str) -> dict[str, Any]:
        return dict(self.post(f"{BASE}/{instance_id}/tokens", {"name": name})["token"])
