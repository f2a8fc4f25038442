"""``inferd quickstart``: ``di create --wait`` for the first model, then a curl to try it.

It is an ordinary API client. Without a context (or with ``--data-dir`` given), it uses the
local server's own admin token and API CA from the data directory, so that it works right
after ``make run`` with no ``inferd auth init``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from inferd.cli.client import wait
from inferd.cli.client.http import ApiClient, Connection
from inferd.cli.client.instances import create_instance
from inferd.cli.client.session import Failure, Flags, failures_as_exit, resolve, say
from inferd.cli.client.spec_input import SpecFlags, first_model


def local_connection(data_dir: Path | None, api_url: str | None) -> Connection | None:
    """The data directory's admin token and API CA, and the URL its settings serve on."""
    from inferd.cli.common import settings_from

    settings = settings_from(data_dir, None)
    token_file = settings.data_dir / "admin-token"
    if not token_file.exists():
        return None
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    scheme = "https" if settings.tls else "http"
    ca = settings.data_dir / "tls" / "api-ca.pem"
    return Connection(api_url or f"{scheme}://{host}:{settings.port}", token_file.read_text().strip(),
                      str(ca) if scheme == "https" and ca.exists() else None)


def connection_for(flags: Flags, data_dir: Path | None) -> Connection:
    """An explicit ``--data-dir`` wins over the contexts file; otherwise it is the fallback."""
    local = local_connection(data_dir, flags.api_url)
    if data_dir is not None and local is not None:
        return Connection(local.api_url, flags.token or local.token, flags.ca_file or local.ca_file)
    return resolve(flags, fallback=local)


def curl_for(endpoint: str, token: str, model: str) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 32})
    return (f"curl -s {endpoint}/v1/chat/completions -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}")


def run(flags: Flags, data_dir: Path | None, name: str, timeout: float) -> None:
    """Create, wait until active (exit 3 on error, 4 on timeout), print the curl on stdout."""
    from inferd.cli.common import console

    with failures_as_exit(), ApiClient(connection_for(flags, data_dir)) as api:
        model: dict[str, Any] = first_model(api.models(), api.sizes().get("sizes") or []) or {}
        created = create_instance(api, SpecFlags(name=name, model=model.get("model_slug")))
        instance_id = created["dedicated_inference"]["id"]
        say(f"created instance {instance_id}; waiting for it to be active …")
        try:
            instance = wait.until_active(api, instance_id, timeout=timeout, label=name)
        except Failure as exc:  # on the server's machine, its operator can read the replica's log
            raise Failure(f"{exc}; see: inferd logs {instance_id}", exc.code) from None
    endpoints = instance["endpoints"]
    endpoint = endpoints.get("public_endpoint_fqdn") or endpoints["private_endpoint_fqdn"]
    slug = instance["spec"]["model_deployments"][0]["model_slug"]
    console.print(f"[green]active[/green]: {model.get('model_name') or slug} is served at {endpoint}/v1 "
                  "(token shown once, below)")
    print(curl_for(endpoint, created["token"]["value"], slug))
