"""The client CLI as a user runs it: ``python -m inferd auth|di|sizes|models|chat|quickstart``
in a subprocess, with its own contexts file, against one real ``inferd serve`` (SQLite, real
controller, gateway and llama.cpp engine).

The tests share one server and, in file order, one instance (``cli-a``): created, read, scaled
to 2, given tokens, chatted with, then deleted; capacity (the default catalog's 4 units) is
kept in mind where a test needs the controller to refuse a placement.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509

from inferd.config import load_catalog_document
from inferd.domain.catalog import Catalog
from tests.conftest import running_server
from tests.support import specs
from tests.support.engine import requires_llama_server
from tests.support.server import REPO, Server, free_port
from tests.support.waiting import wait_for

pytestmark = requires_llama_server

CLEAN_ENV = ("INFERD_TOKEN", "INFERD_API_URL", "INFERD_CA_FILE", "INFERD_CONTEXT", "INFERD_DI_TOKEN",
             "INFERD_DATA_DIR", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


@dataclass
class Cli:
    """``inferd …`` with a given contexts file, as a shell user would run it."""

    config: Path

    def run(self, *args: str, code: int = 0, stdin: str | None = None, env: dict[str, str] | None = None,
            config: Path | None = None) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
        environment |= {"INFERD_CONFIG": str(config or self.config), "COLUMNS": "200", **(env or {})}
        result = subprocess.run(
            [sys.executable, "-m", "inferd", *args], input=stdin if stdin is not None else "", capture_output=True,
            text=True, timeout=240, cwd=REPO, env=environment,
        )
        assert result.returncode == code, (
            f"inferd {' '.join(args)}: exit {result.returncode}, wanted {code}\nstdout: {result.stdout}\nstderr: {result.stderr}")
        assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.run(*args, "--output", "json", **kwargs).stdout)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        "sqlite", tmp_path_factory.mktemp("cli") / "inferd", controller=True, gateway=True,
        INFERD_RATE_LIMIT_PER_MINUTE="100000", INFERD_RATE_LIMIT_PER_HOUR="1000000",
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def cli(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """A user logged in with ``auth init`` (token on stdin, as in ``cat token | inferd auth init``)."""
    runner = Cli(tmp_path_factory.mktemp("home") / "config" / "inferd" / "config.yaml")
    runner.run("auth", "init", "--context", "main", "--api-url", server.url, "--ca-file", str(server.ca_file),
               stdin=server.admin_token + "\n")
    return runner


@pytest.fixture(scope="module")
def created(cli: Cli) -> dict[str, Any]:
    """``di create --wait`` with flags only: the response (instance and its token) and the progress shown."""
    result = cli.run("di", "create", "--name", "cli-a", "--model", specs.MODEL, "--wait", "--output", "json")
    return {**json.loads(result.stdout), "progress": result.stderr}


def test_auth_init_checks_the_token_and_saves_it_with_mode_0600(server: Server, cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "fresh" / "config.yaml"
    refused = cli.run("auth", "init", "--api-url", server.url, "--ca-file", str(server.ca_file),
                      "--token", "dop_v1_" + "0" * 64, config=config, code=1)
    line = one_error_line(refused)
    assert "401" in line and "request_id" in line and "nothing saved" in line
    assert not config.exists()
    untrusted = cli.run("auth", "init", "--api-url", server.url, "--token", server.admin_token, config=config, code=1)
    assert "--ca-file" in one_error_line(untrusted)  # the API's own CA is not in the system's trust store

    cli.run("auth", "init", "--api-url", server.url, "--ca-file", str(server.ca_file), config=config,
            stdin=server.admin_token + "\n")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    listed = cli.run("auth", "list", config=config)
    assert server.admin_token not in listed.stdout + listed.stderr
    assert listed.stdout.splitlines()[1].split()[0] == "default" and listed.stdout.splitlines()[1].rstrip().endswith("*")


def test_auth_switch_and_overrides_pick_the_token(server: Server, cli: Cli, created: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    instance_id = created["dedicated_inference"]["id"]
    other_team = server.new_team("cli-other")
    for context, token in (("mine", server.admin_token), ("other", other_team)):
        cli.run("auth", "init", "--context", context, "--api-url", server.url, "--ca-file", str(server.ca_file),
                "--token", token, config=config)
    contexts = {c["name"]: c for c in cli.json("auth", "list", config=config)}
    assert contexts["mine"]["current"] and not contexts["other"]["current"]  # the first one stays current
    assert "token" not in json.dumps(contexts)

    assert cli.json("di", "get", instance_id, config=config)["id"] == instance_id
    cli.run("auth", "switch", "--context", "other", config=config)
    assert "404" in one_error_line(cli.run("di", "get", instance_id, config=config, code=1))  # another team's
    assert cli.json("di", "get", instance_id, "--context", "mine", config=config)["id"] == instance_id
    assert cli.json("di", "get", instance_id, config=config, env={"INFERD_TOKEN": server.admin_token})["id"] == instance_id
    assert cli.json("di", "list", config=config) == []
    cli.run("auth", "remove", "--context", "other", config=config)
    assert "auth init" in one_error_line(cli.run("di", "list", config=config, code=1))  # no current context left
    assert [c["name"] for c in cli.json("auth", "list", config=config)] == ["mine"]


def test_sizes_and_models(cli: Cli) -> None:
    sizes = cli.json("sizes")
    assert {"gpu_slug": specs.SLUG, "region": specs.REGION}.items() <= sizes[0].items()
    models = cli.json("models")
    assert specs.MODEL in [m["model_slug"] for m in models]
    table = cli.run("models").stdout.splitlines()
    assert table[0].split()[:2] == ["Slug", "Name"] and any(line.startswith(specs.MODEL) for line in table[1:])
    assert cli.run("sizes", "--no-header").stdout.split()[:2] == [specs.SLUG, specs.REGION]


def test_create_with_flags_waits_until_active(created: dict[str, Any]) -> None:
    instance = created["dedicated_inference"]
    assert instance["status"] == "active" and "pending_deployment_spec" not in instance
    deployment = instance["spec"]["model_deployments"][0]
    assert deployment["model_slug"] == specs.MODEL
    assert deployment["accelerators"][0] == {"accelerator_slug": specs.SLUG, "scale": 1, "type": "prefill_decode"}
    assert instance["region"] == specs.REGION and instance["spec"]["enable_public_endpoint"] is True
    assert created["token"]["value"].startswith("di_")
    assert "cli-a: provisioning" in created["progress"] and "cli-a: active  replicas ready 1/1" in created["progress"]


def test_get_and_list_as_json_and_table(cli: Cli, created: dict[str, Any]) -> None:
    instance_id = created["dedicated_inference"]["id"]
    got = cli.json("di", "get", instance_id)
    assert got["id"] == instance_id and got["spec"]["name"] == "cli-a"
    assert instance_id in [i["id"] for i in cli.json("di", "list")]
    assert cli.json("di", "list", "--region", "atl1") != []
    table = cli.run("di", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "Name", "Region", "Status"]
    row = next(line.split() for line in table[1:] if line.startswith(instance_id))
    assert row[1:4] == ["cli-a", "atl1", "active"]
    assert cli.run("di", "get", instance_id, "--no-header").stdout.split()[0] == instance_id


def test_update_scale_waits_for_the_new_replica(cli: Cli, created: dict[str, Any]) -> None:
    instance_id = created["dedicated_inference"]["id"]
    result = cli.run("di", "update", instance_id, "--scale", "2", "--wait", "--output", "json")
    updated = json.loads(result.stdout)
    assert updated["status"] == "active" and "pending_deployment_spec" not in updated
    assert updated["spec"]["model_deployments"][0]["accelerators"][0]["scale"] == 2
    assert updated["spec"]["version"] == 2 and updated["spec"]["name"] == "cli-a"  # only the scale changed
    assert "replicas ready 2/2" in result.stderr
    accelerators = cli.json("di", "accelerators", instance_id)
    assert len(accelerators) == 2 and {a["status"] for a in accelerators} == {"active"}
    assert {a["slug"] for a in accelerators} == {specs.SLUG}
    table = cli.run("di", "accelerators", instance_id).stdout.splitlines()
    assert table[0].split() == ["ID", "Name", "Slug", "Role", "Status", "Created"] and len(table) == 3


def test_tokens_create_list_revoke(cli: Cli, created: dict[str, Any]) -> None:
    instance_id = created["dedicated_inference"]["id"]
    models_url = created["dedicated_inference"]["endpoints"]["public_endpoint_fqdn"] + "/v1/models"
    token = cli.json("di", "tokens", "create", instance_id, "--name", "cli-token")
    assert token["value"].startswith("di_") and token["name"] == "cli-token"
    shown = cli.run("di", "tokens", "create", instance_id, "--name", "cli-table")
    assert "di_" in shown.stdout and "only once" in shown.stderr
    listed = cli.json("di", "tokens", "list", instance_id)
    assert {"cli-token", "cli-table"} <= {t["name"] for t in listed}
    assert all("value" not in t for t in listed)
    assert "di_" not in cli.run("di", "tokens", "list", instance_id).stdout

    def status_with(value: str) -> int:
        return httpx.get(models_url, headers={"Authorization": f"Bearer {value}"}, timeout=10).status_code

    assert status_with(token["value"]) == 200
    revoked = cli.run("di", "tokens", "revoke", instance_id, token["id"])
    assert token["id"] in revoked.stderr
    wait_for(lambda: status_with(token["value"]) == 401, timeout=10, what="the revoked token refused")
    assert token["id"] not in [t["id"] for t in cli.json("di", "tokens", "list", instance_id)]


def test_ca_writes_the_instance_pem(server: Server, cli: Cli, created: dict[str, Any], tmp_path: Path) -> None:
    instance_id = created["dedicated_inference"]["id"]
    pem = cli.run("di", "ca", instance_id).stdout
    certificate = x509.load_pem_x509_certificate(pem.encode())
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with server.client(server.admin_token) as api:
        assert pem.strip() == base64.b64decode(api.get(f"/v2/dedicated-inferences/{instance_id}/ca").json()["cert"]).decode().strip()
    cli.run("di", "ca", instance_id, "--out", str(tmp_path / "ca.pem"))
    assert (tmp_path / "ca.pem").read_text().strip() == pem.strip()


def test_chat_streams_answers_from_the_engine(cli: Cli, created: dict[str, Any]) -> None:
    instance_id = created["dedicated_inference"]["id"]
    given = cli.run("chat", instance_id, "-m", "Name a fruit.", "--max-tokens", "12",
                    env={"INFERD_DI_TOKEN": created["token"]["value"]})
    assert given.stdout.strip() and "created token" not in given.stderr

    before = {t["id"] for t in cli.json("di", "tokens", "list", instance_id)}
    private = cli.run("chat", instance_id, "--private", "-m", "Say hi.", "--max-tokens", "8")
    assert private.stdout.strip()
    new = {t["id"] for t in cli.json("di", "tokens", "list", instance_id)} - before
    assert len(new) == 1 and new.pop() in private.stderr  # made on the fly, with its id to revoke it

    interactive = cli.run("chat", instance_id, "--max-tokens", "8", stdin="Hello\n/exit\n",
                          env={"INFERD_DI_TOKEN": created["token"]["value"]})
    assert interactive.stdout.strip()

    refused = cli.run("chat", instance_id, "-m", "Hi", env={"INFERD_DI_TOKEN": "di_" + "0" * 48}, code=1)
    assert "401" in one_error_line(refused)


def test_create_and_update_from_spec_files(cli: Cli, tmp_path: Path) -> None:
    """A YAML file on stdin holding only the spec; a JSON file holding a whole PATCH body. Without
    a public endpoint, chat goes to the private one over TLS checked against the instance's CA."""
    spec_only = yaml.safe_dump(specs.spec("cli-from-file", public=False), sort_keys=False)
    assert spec_only.startswith("version: 1") and "spec:" not in spec_only
    created = cli.json("di", "create", "--spec", "-", "--wait", stdin=spec_only)
    instance = created["dedicated_inference"]
    assert instance["status"] == "active" and instance["vpc_uuid"] == specs.VPC
    assert instance["spec"]["enable_public_endpoint"] is False
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps({"spec": {"name": "cli-renamed"}}))
    updated = cli.json("di", "update", instance["id"], "--spec", str(patch), "--wait")
    assert updated["spec"]["name"] == "cli-renamed" and updated["spec"]["enable_public_endpoint"] is False
    answer = cli.run("chat", instance["id"], "-m", "Hi", "--max-tokens", "6", env={"INFERD_DI_TOKEN": created["token"]["value"]})
    assert answer.stdout.strip()
    cli.run("di", "delete", instance["id"], "--wait")


def test_errors_are_one_line_with_an_exit_code(cli: Cli) -> None:
    missing = one_error_line(cli.run("di", "get", "6b5c619c-359c-44ca-87e2-47e98170c01d", code=1))
    assert "HTTP 404" in missing and "request_id: " in missing
    scale = one_error_line(cli.run("di", "create", "--name", "bad-scale", "--scale", "0", code=1))
    assert "422" in scale and "accelerators[0].scale" in scale
    region = one_error_line(cli.run("di", "create", "--name", "bad-region", "--region", "mars", code=1))
    assert "spec.region" in region and "mars" in region
    assert cli.run("di", "create", "--name", "x", "--scale", "many", code=2).stdout == ""  # Typer's usage error
    nowhere = one_error_line(cli.run("sizes", "--api-url", f"https://127.0.0.1:{free_port()}", code=1))
    assert "cannot reach" in nowhere
    assert "auth init" in one_error_line(cli.run("sizes", config=cli.config.with_name("missing.yaml"), code=1))
    assert "not both" in one_error_line(cli.run("di", "create", "--spec", "-", "--name", "x", code=1))
    assert "nothing to change" in one_error_line(cli.run("di", "update", "6b5c619c-359c-44ca-87e2-47e98170c01d", code=1))


def test_wait_ends_in_error_with_the_reason(cli: Cli, created: dict[str, Any]) -> None:
    """Ask for more units than are free (but no more than exist, which the API would refuse):
    the controller sets ``error`` with its reason, and ``--wait`` exits 3 with it."""
    capacity = Catalog.from_document(load_catalog_document(None)).capacity(specs.SLUG, specs.REGION)
    held = sum(a["scale"] for i in cli.json("di", "list") for d in i["spec"]["model_deployments"] for a in d["accelerators"])
    assert 0 < capacity - held < capacity
    result = cli.run("di", "create", "--name", "cli-too-big", "--scale", str(capacity - held + 1), "--wait",
                     "--output", "json", code=3)
    assert "not enough capacity" in result.stderr.strip().splitlines()[-1]
    shown = json.loads(result.stdout)  # the instance and its token are still shown
    assert shown["dedicated_inference"]["status"] == "error" and shown["token"]["value"].startswith("di_")
    cli.run("di", "delete", shown["dedicated_inference"]["id"], "--wait")


def test_delete_waits_until_gone(cli: Cli, created: dict[str, Any]) -> None:
    instance_id = created["dedicated_inference"]["id"]
    result = cli.run("di", "delete", instance_id, "--wait")
    assert "deleted" in result.stderr.splitlines()[-1]
    assert "404" in one_error_line(cli.run("di", "get", instance_id, code=1))


def test_quickstart_uses_the_data_dir_without_a_context(server: Server, cli: Cli, tmp_path: Path) -> None:
    result = cli.run("quickstart", "--data-dir", str(server.data_dir), "--api-url", server.url, "--name", "cli-quick",
                     config=tmp_path / "none.yaml")
    assert "active" in result.stderr and "token shown once" in result.stderr
    curl = result.stdout.strip()
    assert curl.startswith("curl -s http") and specs.MODEL in curl
    url = curl.split()[2]
    token = curl.split("Bearer ")[1].split("'")[0]
    answer = httpx.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                        json={"model": specs.MODEL, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8})
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    instance_id = url.rstrip("/").split("/")[-4]
    assert cli.json("di", "get", instance_id)["spec"]["name"] == "cli-quick"
    cli.run("di", "delete", instance_id, "--wait")


def test_server_sent_events_are_parsed_as_openai_sends_them() -> None:
    from inferd.cli.client import sse

    lines = [": keep-alive", "", 'data: {"choices": [{"delta": {"role": "assistant"}}]}', "",
             'data: {"choices": [{"delta": {"content": "Hel"}}]}', "", "event: x", 'data: {"choices": ',
             'data: [{"delta": {"content": "lo"}}]}', "", "data: [DONE]", "", 'data: {"choices": [{"delta": {"content": "!"}}]}']
    assert "".join(sse.delta_text(c) for c in sse.chunks(lines)) == "Hello"
