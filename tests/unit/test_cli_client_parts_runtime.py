"""The client CLI's other pure parts: the contexts file, table/JSON output, server-sent events,
API errors as one line, and the decisions of ``--wait``; no server, no network."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferd.cli.client import config as cfg
from inferd.cli.client import sse, wait
from inferd.cli.client.http import ApiError, Unreachable, describe_transport, error_from, verify_for
from inferd.cli.client.output import Format, Output, cell, field, table
from inferd.cli.client.session import EXIT_WAIT_TIMEOUT, Failure

MAIN = cfg.Context("https://127.0.0.1:8443", "dop_v1_" + "a" * 64, "/home/me/.local/share/inferd/tls/api-ca.pem")
PROD = cfg.Context("https://inferd.example.com", "dop_v1_" + "b" * 64)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the contexts file -------------------------------------------------------------------------
def test_contexts_survive_a_round_trip_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".config" / "inferd" / "config.yaml"
    config = cfg.with_context(cfg.with_context(cfg.Config(), "main", MAIN), "prod", PROD)
    assert config.current == "main"  # the first context saved becomes current, later ones do not
    cfg.save(path, config)
    assert cfg.load(path) == config
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert "ca_file" not in cfg.to_document(config)["contexts"]["prod"]
    assert cfg.load(tmp_path / "nothing-yet.yaml") == cfg.Config()


def test_saving_tightens_an_old_file_and_leaves_an_existing_directory_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)  # e.g. --config ~/inferd.yaml: the home directory is not the client's to change
    path = shared / "inferd.yaml"
    path.write_text("contexts: {}\n")
    path.chmod(0o644)
    cfg.save(path, cfg.with_context(cfg.Config(), "main", MAIN))
    assert _mode(path) == 0o600 and _mode(shared) == 0o755
    assert cfg.load(path).get("main") == MAIN


def test_switch_and_remove(tmp_path: Path) -> None:
    config = cfg.with_context(cfg.with_context(cfg.Config(), "main", MAIN), "prod", PROD)
    switched = cfg.switched(config, "prod")
    assert switched.current == "prod" and config.current == "main"
    assert cfg.with_context(switched, "main", PROD).current == "prod"  # replacing a context keeps the current one
    assert cfg.without_context(switched, "main") == cfg.Config("prod", {"prod": PROD})
    emptied = cfg.without_context(switched, "prod")
    assert emptied.current is None and set(emptied.contexts) == {"main"}
    path = tmp_path / "config.yaml"
    cfg.save(path, cfg.without_context(emptied, "main"))
    assert cfg.load(path) == cfg.Config()


@pytest.mark.parametrize("change", [lambda c: c.get("staging"), lambda c: cfg.switched(c, "staging"), lambda c: cfg.without_context(c, "staging")])
def test_an_unknown_context_names_the_known_ones(change: Any) -> None:
    config = cfg.with_context(cfg.with_context(cfg.Config(), "main", MAIN), "prod", PROD)
    with pytest.raises(cfg.ConfigError, match=r"no context 'staging' \(contexts: main, prod\).*auth init --context staging"):
        change(config)
    with pytest.raises(cfg.ConfigError, match=r"\(contexts: none\)"):
        change(cfg.Config())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contexts: [\n", r"config\.yaml is not valid YAML: line 2, column 1: expected the node content"),
        ("current_context: main\ncontexts:\n  main: {api_url: x, token\n", r"config\.yaml is not valid YAML: line 4, column 1: "),
        ("- main\n", r"config\.yaml: expected a mapping with 'contexts'"),
        ("contexts: [main]\n", r"config\.yaml: expected a mapping with 'contexts'"),
        ("contexts:\n  main: {api_url: https://x}\n", r"config\.yaml: context 'main' needs api_url and token"),
        ("contexts:\n  main: just-a-string\n", r"config\.yaml: context 'main' needs api_url and token"),
    ],
)
def test_a_corrupt_file_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(cfg.ConfigError, match=expected) as raised:
        cfg.load(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_files_with_no_contexts_are_empty(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    for text in ("", "current_context: null\ncontexts: {}\n", "contexts:\n", "current_context:\n"):
        path.write_text(text)
        assert cfg.load(path) == cfg.Config(), text


def test_files_that_cannot_be_read_or_written_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(tmp_path)  # a directory
    (tmp_path / "a-file").write_text("")
    with pytest.raises(cfg.ConfigError, match="cannot write .*a-file/config.yaml"):
        cfg.save(tmp_path / "a-file" / "config.yaml", cfg.Config())


def test_a_failed_save_leaves_the_old_file_whole_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    cfg.save(path, cfg.with_context(cfg.Config(), "main", MAIN))
    before = path.read_bytes()
    unwritable = cfg.Context("https://x", object())  # type: ignore[arg-type]  # YAML cannot write it: the dump fails midway
    with pytest.raises(Exception):  # noqa: B017 (whatever the YAML library raises)
        cfg.save(path, cfg.with_context(cfg.load(path), "broken", unwritable))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_where_the_file_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(cfg.CONFIG_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert cfg.default_path() == tmp_path / "xdg" / "inferd" / "config.yaml"
    monkeypatch.setenv(cfg.CONFIG_ENV, str(tmp_path / "explicit.yaml"))
    assert cfg.default_path() == tmp_path / "explicit.yaml"


# -- output ------------------------------------------------------------------------------------
SIZES = [
    {"gpu_slug": "gpu-h100x1-80gb", "region": "nyc2", "price_per_hour": "3.39", "currency": "USD"},
    {"gpu_slug": "cpu-slot-2gb", "region": "atl1", "price_per_hour": "0.00", "currency": None},
]
COLUMNS = [("Slug", field("gpu_slug")), ("Region", field("region")), ("Price/hour", field("price_per_hour")),
           ("Currency", field("currency"))]


def test_a_table_pads_columns_and_drops_the_header_on_request() -> None:
    assert table(SIZES, COLUMNS) == (
        "Slug             Region  Price/hour  Currency\n"
        "gpu-h100x1-80gb  nyc2    3.39        USD\n"
        "cpu-slot-2gb     atl1    0.00        -\n")
    out = io.StringIO()
    Output(no_header=True).items(SIZES, COLUMNS, stream=out)
    assert out.getvalue() == "gpu-h100x1-80gb  nyc2  3.39  USD\ncpu-slot-2gb     atl1  0.00  -\n"
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["gpu-h100x1-80gb", "cpu-slot-2gb"]
    assert table([], COLUMNS) == "Slug  Region  Price/hour  Currency\n" and table([], COLUMNS, header=False) == ""


def test_json_output_is_the_objects_themselves() -> None:
    out = io.StringIO()
    Output(Format.json).items(SIZES, COLUMNS, stream=out)
    assert json.loads(out.getvalue()) == SIZES
    one = {"dedicated_inference": {"id": "i-1", "status": "active"}, "token": {"value": "di_x"}}
    out = io.StringIO()
    Output(Format.json).item(one, [("ID", field("id"))], row={"id": "i-1"}, stream=out)
    assert json.loads(out.getvalue()) == one
    out = io.StringIO()
    Output().item(one, [("ID", field("id")), ("Token", field("token", "value"))], row={"id": "i-1", "token": {"value": "di_x"}}, stream=out)
    assert out.getvalue() == "ID   Token\ni-1  di_x\n"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "-"), ("", "-"), (True, "true"), (False, "false"), (0, "0"), ([], "-"), (["a", None, 2], "a,-,2"), ("two\nlines", "two lines")],
)
def test_cells(value: Any, shown: str) -> None:
    assert cell(value) == shown


def test_nested_fields() -> None:
    item = {"spec": {"model_deployments": [{"model_slug": "m"}]}, "endpoints": None}
    assert field("spec", "model_deployments", 0, "model_slug")(item) == "m"
    assert field("spec", "model_deployments", 3, "model_slug")(item) is None
    assert field("endpoints", "public_endpoint_fqdn")(item) is None


# -- server-sent events ------------------------------------------------------------------------
STREAM = (
    ": keep-alive\r\n\r\n"
    'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\r\n\r\n'
    "event: message\r\nid: 7\r\n"
    'data: {"choices": [{"index": 0, "delta": {"content": "Hé"}}]}\r\n\r\n'
    'data: {"choices": [{"index": 0,\r\n'
    'data:"delta": {"content": "llo"}}]}\r\n\r\n'
    'data: {"choices": [], "usage": {"completion_tokens": 3}}\r\n\r\n'
    "data: [DONE]\r\n\r\n"
    'data: {"choices": [{"delta": {"content": " after the end"}}]}\r\n\r\n'
).encode()


def _answer(chunks: list[bytes]) -> str:
    """The text, read the way ``inferd chat`` reads it: response lines into ``sse.chunks``."""
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))
    return "".join(sse.delta_text(c) for c in sse.chunks(response.iter_lines()))


def test_events_split_at_every_byte_boundary_read_the_same() -> None:
    assert _answer([STREAM]) == "Héllo"
    assert _answer([STREAM[i:i + 1] for i in range(len(STREAM))]) == "Héllo"
    for cut in range(len(STREAM) + 1):
        assert _answer([STREAM[:cut], STREAM[cut:]]) == "Héllo", cut


def test_event_fields() -> None:
    lines = [": comment", "retry: 10", "data: first", "data:second", "data:  third", "", "", "data", "", "data: tail"]
    assert list(sse.events(lines)) == ["first\nsecond\n third", "", "tail"]
    assert list(sse.events(["data: x\n", "\n", "data: y\r\n"])) == ["x", "y"]


def test_chunks_end_at_done_and_keep_errors() -> None:
    lines = ["data: not json", "", "data: [1, 2]", "", 'data: {"error": {"message": "engine died"}}', "", "data:  [DONE] ", "", 'data: {"x": 1}']
    assert list(sse.chunks(lines)) == [{"error": {"message": "engine died"}}]
    assert sse.delta_text({"choices": [{"delta": {"content": "a"}}, {"delta": None}, {"delta": {"content": None}}, {"delta": {"content": "b"}}]}) == "ab"
    assert sse.delta_text({"choices": None}) == ""


# -- API errors --------------------------------------------------------------------------------
REQUEST_ID = "e1dffb1a-644e-4ac2-857c-e5b88605003e"


def test_an_api_error_is_one_line_with_status_id_message_and_request_id() -> None:
    body = {"id": "not_found", "message": "The resource you were accessing could not be found.", "request_id": REQUEST_ID}
    error = error_from(httpx.Response(404, json=body))
    assert str(error) == f"HTTP 404 not_found: The resource you were accessing could not be found. (request_id: {REQUEST_ID})"
    assert (error.status, error.retry_after) == (404, None)
    assert str(ApiError(422, "unprocessable_entity", "spec.region: unknown region mars", None)) == (
        "HTTP 422 unprocessable_entity: spec.region: unknown region mars")


def test_an_error_from_something_else_than_the_api_is_one_line_too() -> None:
    proxy = error_from(httpx.Response(502, headers={"x-request-id": "r-1"}, text="<html>\n  <body>Bad gateway</body>\n</html>\n"))
    assert str(proxy) == "HTTP 502 bad_gateway: <html> <body>Bad gateway</body> </html> (request_id: r-1)"
    long = error_from(httpx.Response(500, text="x" * 500))
    assert long.message == "x" * 200 and long.error_id == "internal_server_error"
    assert str(error_from(httpx.Response(503, json=["odd"]))) == 'HTTP 503 service_unavailable: ["odd"]'
    assert str(error_from(httpx.Response(503, text=" \n"))) == "HTTP 503 service_unavailable: Service Unavailable"
    assert error_from(httpx.Response(422, json={"id": "unprocessable_entity", "message": "m" * 300})).message == "m" * 300  # the API's own: whole
    assert error_from(httpx.Response(599)).error_id == "error"


def test_retry_after_seconds() -> None:
    assert error_from(httpx.Response(429, headers={"retry-after": "12"}, json={"id": "too_many_requests", "message": "m"})).retry_after == 12.0
    assert error_from(httpx.Response(429, headers={"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"})).retry_after is None


def test_connection_failures_say_what_to_do(tmp_path: Path) -> None:
    url = "https://127.0.0.1:8443"
    refused = describe_transport(url, httpx.ConnectError("[Errno 111] Connection refused"))
    assert refused == f"cannot reach {url}: [Errno 111] Connection refused"
    tls = describe_transport(url, httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"))
    assert tls.startswith(f"TLS verification of {url} failed") and tls.endswith("pass the API's CA with --ca-file")
    assert describe_transport(url, httpx.ReadTimeout("")) == f"{url} did not answer in time"
    assert verify_for(None) is True
    with pytest.raises(Unreachable, match="cannot load CA file .*missing.pem"):
        verify_for(str(tmp_path / "missing.pem"))


# -- --wait ------------------------------------------------------------------------------------
def _instance(status: str, scales: list[int], pending: list[int] | None = None, reason: str | None = None) -> dict[str, Any]:
    def spec(counts: list[int]) -> dict[str, Any]:
        return {"name": "chat-1", "model_deployments": [{"model_slug": "m", "accelerators": [
            {"accelerator_slug": "cpu-slot-2gb", "scale": n, "type": "prefill_decode"} for n in counts]}]}
    instance = {"id": "i-1", "status": status, "status_reason": reason, "spec": spec(scales), "pending_deployment_spec": None}
    if pending is not None:
        instance["pending_deployment_spec"] = {**spec(pending), "status": "deploying"}
    return instance


def _accelerators(*statuses: str) -> list[dict[str, Any]]:
    return [{"id": f"a-{i}", "name": f"cpu-{i}", "role": "prefill_decode", "slug": "cpu-slot-2gb", "status": s,
             "created_at": "2026-12-05T19:36:31Z"} for i, s in enumerate(statuses)]


def test_progress_counts_the_replicas_of_the_spec_being_rolled_out() -> None:
    scaling = wait.observe(_instance("updating", [1], pending=[1, 2], reason="starting the model server"), _accelerators("active", "provisioning"))
    assert scaling == wait.Progress("updating", 1, 3, "starting the model server")
    assert scaling.text() == "updating  replicas ready 1/3  (starting the model server)"
    assert wait.observe(_instance("active", [2]), _accelerators("active", "active")).text() == "active  replicas ready 2/2"


def test_settled_means_active_with_nothing_pending() -> None:
    assert wait.is_settled(_instance("active", [1]))
    assert not wait.is_settled(_instance("active", [1], pending=[2]))
    assert not wait.is_settled(_instance("provisioning", [1]))
    assert not wait.is_settled(_instance("error", [1], reason="not enough capacity"))


def test_polling_backs_off_and_waits_out_a_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(wait.time, "sleep", slept.append)  # the clock, not inferd: no real waiting
    answers: list[Any] = [False] * 7 + [ApiError(429, "too_many_requests", "API rate limit exceeded.", None, retry_after=7.0),
                                        False, ApiError(429, "too_many_requests", "m", None, retry_after=600.0), True]

    def probe() -> bool:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)

    wait._poll(probe, wait.Display("chat-1"), 3600, "active")
    assert slept == [0.25, 0.375, 0.5625, 0.84375, 1.265625, 1.8984375, 2.0, 7.0, 2.0, 60.0]


def test_polling_stops_at_the_deadline_and_on_other_errors(capsys: pytest.CaptureFixture[str]) -> None:
    display = wait.Display("chat-1")
    display.show("provisioning  replicas ready 0/1")
    with pytest.raises(Failure, match=r"chat-1: still not active after 0 s \(provisioning  replicas ready 0/1\)") as raised:
        wait._poll(lambda: False, display, 0, "active")
    assert raised.value.code == EXIT_WAIT_TIMEOUT
    assert "chat-1: provisioning  replicas ready 0/1" in capsys.readouterr().err

    def refused() -> bool:
        raise ApiError(403, "forbidden", "You are not authorized to perform this operation.", None)

    with pytest.raises(ApiError, match="not authorized"):
        wait._poll(refused, wait.Display("chat-1"), 600, "active")
