"""``inferd di list|get|create|update|delete``, plus ``accelerators`` and ``ca`` of an instance."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from inferd.cli.client import spec_input, wait
from inferd.cli.client.http import BASE, ApiClient, ApiError, Unreachable
from inferd.cli.client.output import Column, Format, Row, field
from inferd.cli.client.session import EXIT_ERROR, Failure, Session, client_command, fail, say
from inferd.cli.client.spec_input import SpecError, SpecFlags

di = typer.Typer(help="Dedicated Inference instances: create, inspect, scale, delete.", no_args_is_help=True)

InstanceId = Annotated[str, typer.Argument(help="Instance id.", show_default=False)]
SpecFile = Annotated[str | None, typer.Option("--spec", help="Spec file, YAML or JSON ('-': stdin); the whole "
                                               "request body {spec: …} or just the spec.")]
Name = Annotated[str | None, typer.Option(help="Instance name.")]
Model = Annotated[str | None, typer.Option(help="Model slug (default: the first one offered, see `inferd models`).")]
Accelerator = Annotated[str | None, typer.Option(help="Accelerator slug (default: the first size the model runs on).")]
Scale = Annotated[int | None, typer.Option(help="Replicas (units of the accelerator) (default on create: 1).")]
Region = Annotated[str | None, typer.Option(help="Region (default: the chosen size's).")]
Public = Annotated[bool | None, typer.Option("--public/--no-public", help="Serve a public endpoint (default on create: yes).")]
Vpc = Annotated[str | None, typer.Option("--vpc", help="VPC UUID to record (default: a placeholder).")]
NewModel = Annotated[str | None, typer.Option("--model", help="Switch to this model slug.")]
NewAccelerator = Annotated[str | None, typer.Option("--accelerator", help="Move to this accelerator slug.")]
NewScale = Annotated[int | None, typer.Option("--scale", help="New number of replicas.")]
NewPublic = Annotated[bool | None, typer.Option("--public/--no-public", help="Turn the public endpoint on or off.")]
HfToken = Annotated[bool, typer.Option("--hf-token", help="Send a Hugging Face token, read from $HF_TOKEN or "
                                       "asked for without echo (asked anyway for a gated model).")]
Timeout = Annotated[float, typer.Option(help="Seconds --wait waits at most (then exit 4).")]


def _endpoint(item: Row) -> Any:
    endpoints = item.get("endpoints") or {}
    return endpoints.get("public_endpoint_fqdn") or endpoints.get("private_endpoint_fqdn")


INSTANCE_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("Name", lambda i: spec_input.desired_spec(i).get("name")),
    ("Region", field("region")),
    ("Status", field("status")),
    ("Model", lambda i: [d.get("model_slug") for d in spec_input.desired_spec(i).get("model_deployments") or []]),
    ("Accelerator", lambda i: sorted({a.get("accelerator_slug") for d in spec_input.desired_spec(i).get("model_deployments") or []
                                      for a in d.get("accelerators") or []})),
    ("Scale", lambda i: spec_input.desired_scale(spec_input.desired_spec(i))),
    ("Endpoint", _endpoint),
    ("Created", field("created_at")),
]
ACCELERATOR_COLUMNS: list[Column] = [
    ("ID", field("id")), ("Name", field("name")), ("Slug", field("slug")), ("Role", field("role")),
    ("Status", field("status")), ("Created", field("created_at")),
]


def read_spec_file(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).expanduser().read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    return spec_input.as_body(spec_input.parse_document(text, "stdin" if path == "-" else path))


def read_hf_token(asked: bool, gated: bool) -> str | None:
    """From ``$HF_TOKEN``, else a hidden prompt on a terminal; never from argv, never echoed."""
    if not (asked or gated):
        return None
    value = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not value and sys.stdin.isatty():
        value = typer.prompt("Hugging Face token", hide_input=True, default="", show_default=False)
    if not value and asked:
        fail("--hf-token: no token in $HF_TOKEN and none typed")
    return value or None


def create_instance(api: ApiClient, flags: SpecFlags, *, spec_file: str | None = None,
                    ask_hf_token: bool = False) -> dict[str, Any]:
    """POST a new instance from a spec file or from flags; the response holds the token, shown once."""
    models = api.models()
    try:
        if spec_file is not None:
            if flags.any_given():
                fail("give either --spec or flags such as --name/--model, not both")
            body = read_spec_file(spec_file)
        else:
            body = spec_input.create_body(flags, models, api.sizes())
    except SpecError as exc:
        fail(str(exc))
    token = read_hf_token(ask_hf_token, spec_input.is_gated(models, body) and "access_tokens" not in body)
    if token:
        body["access_tokens"] = {**(body.get("access_tokens") or {}), "hugging_face_token": token}
    return dict(api.post(BASE, body))


def _latest(api: ApiClient, instance: dict[str, Any]) -> dict[str, Any]:
    try:
        return api.instance(instance["id"])
    except (ApiError, Unreachable):  # already failing: show what is known
        return instance


@di.command("list")
@client_command()
def list_instances(session: Session, region: Annotated[str | None, typer.Option(help="Only this region.")] = None) -> None:
    """List the team's instances."""
    session.output.items(session.api.all_pages(BASE, "dedicated_inferences", region=region), INSTANCE_COLUMNS)


@di.command("get")
@client_command()
def get_instance(session: Session, instance_id: InstanceId) -> None:
    """Show one instance (JSON: the whole object, pending spec and status reason included)."""
    session.output.item(session.api.instance(instance_id), INSTANCE_COLUMNS)


@di.command("create")
@client_command()
def create(session: Session, spec: SpecFile = None, name: Name = None, model: Model = None,
           accelerator: Accelerator = None, scale: Scale = None, region: Region = None, public: Public = None,
           vpc: Vpc = None, hf_token: HfToken = False,
           wait_: Annotated[bool, typer.Option("--wait", help="Wait until active, showing progress.")] = False,
           timeout: Timeout = 600) -> None:
    """Create an instance from flags (defaults from `inferd sizes`/`inferd models`) or a spec file.

    JSON output is the API's create response: the instance and its first token, shown only this once."""
    flags = SpecFlags(name, model, accelerator, scale, region, public, vpc)
    created = create_instance(session.api, flags, spec_file=spec, ask_hf_token=hf_token)
    instance = created["dedicated_inference"]
    failure: Failure | None = None
    if wait_:
        try:
            instance = wait.until_active(session.api, instance["id"], timeout=timeout, label=instance["spec"]["name"])
        except Failure as exc:  # still show the instance and its token, which cannot be read again
            failure, instance = exc, _latest(session.api, instance)
    created = {**created, "dedicated_inference": instance}
    session.output.item(created, INSTANCE_COLUMNS + [("Token", field("token", "value"))],
                        row={**instance, "token": created.get("token")})
    if session.output.format is Format.table:
        say("the token is shown only once: keep it (more with `inferd di tokens create`)")
    if failure:
        raise failure


@di.command("update")
@client_command()
def update(session: Session, instance_id: InstanceId, spec: SpecFile = None, name: Name = None, model: NewModel = None,
           accelerator: NewAccelerator = None, scale: NewScale = None, public: NewPublic = None, hf_token: HfToken = False,
           wait_: Annotated[bool, typer.Option("--wait", help="Wait until the change is rolled out.")] = False,
           timeout: Timeout = 600) -> None:
    """Change an instance: flags change only what they name (e.g. `--scale 2`); a spec file is sent as the patch."""
    flags = SpecFlags(name=name, model=model, accelerator=accelerator, scale=scale, public=public)
    try:
        if spec is not None:
            if flags.any_given():
                fail("give either --spec or flags such as --scale/--name, not both")
            body = read_spec_file(spec)
        elif hf_token and not flags.any_given():
            body = {}  # only a new Hugging Face token
        else:
            current = session.api.instance(instance_id) if flags.touches_deployment() else None
            body = spec_input.patch_body(flags, current)
    except SpecError as exc:
        fail(str(exc))
    token = read_hf_token(True, False) if hf_token else None
    if token:
        body["access_tokens"] = {"hugging_face_token": token}
    instance = session.api.patch(f"{BASE}/{instance_id}", body)["dedicated_inference"]
    if wait_:
        instance = wait.until_active(session.api, instance_id, timeout=timeout, label=instance["spec"]["name"])
    session.output.item(instance, INSTANCE_COLUMNS)


@di.command("delete")
@client_command(output=False)
def delete(session: Session, instance_id: InstanceId,
           force: Annotated[bool, typer.Option("--force", "-f", help="Do not ask for confirmation.")] = False,
           wait_: Annotated[bool, typer.Option("--wait", help="Wait until it is gone.")] = False,
           timeout: Timeout = 600) -> None:
    """Delete an instance: its replicas stop and its endpoints and tokens go away."""
    if not force and sys.stdin.isatty() and not typer.confirm(f"delete instance {instance_id}?", default=False):
        fail("not deleted", EXIT_ERROR)
    session.api.delete(f"{BASE}/{instance_id}")
    say(f"deletion of {instance_id} accepted")
    if wait_:
        wait.until_gone(session.api, instance_id, timeout=timeout)


@di.command("accelerators")
@client_command()
def accelerators(session: Session, instance_id: InstanceId) -> None:
    """The accelerators (replicas) of an instance and their status."""
    session.output.items(session.api.accelerators(instance_id), ACCELERATOR_COLUMNS)


@di.command("ca")
@client_command(output=False)
def ca(session: Session, instance_id: InstanceId,
       out: Annotated[Path | None, typer.Option("--out", help="Write the PEM to this file instead of stdout.")] = None) -> None:
    """The instance's CA certificate (PEM): trust it to reach the private endpoint."""
    pem = session.api.ca_pem(instance_id)
    if out is None:
        sys.stdout.write(pem if pem.endswith("\n") else pem + "\n")
        return
    out.write_text(pem)
    say(f"wrote {out}")
