"""The web console (/console) in a real headless browser against a real inferd.

One ``inferd serve`` (API + controller + gateway, SQLite, llama.cpp replicas; the packaged catalog
plus a gated model that is offered, never deployed) for the module and Debian's chromium driven
by Playwright. The tests run in order as one user's session: sign in, see the gated model ask for
a Hugging Face token, create an instance through the form, watch it become active, chat in the
playground (streamed through the instance's public endpoint), see the traffic in the charts, ride
out a 429, create and revoke a token, scale, check another team sees nothing, a narrow screen,
delete, sign out. Each page is also checked with axe-core (no serious or critical violation).

``INFERD_CONSOLE_SCREENSHOTS=1`` also saves a screenshot of each page under docs/console/ (the
pictures in docs/console.md); CI leaves them alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_server
from tests.support import specs
from tests.support.server import REPO, Server, free_port
from tests.support.waiting import wait_for

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(
        "Debian's chromium (/usr/bin/chromium) is not installed: `make browser` (scripts/install-browser.sh) installs it; "
        "in CI this module fails instead of skipping",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, Route, expect, sync_playwright  # noqa: E402

from tests.support.browser import SCREENSHOTS, Session, assert_accessible, shot, some_traffic, wait_while_browsing  # noqa: E402

NAME = "console-e2e"
GATED = "inferd-tests/gated-chat"
GATED_MODEL = f"""
# Added by tests/e2e/test_console.py: a gated model, so that the create form asks for a Hugging
# Face token. Never deployed (no hub is reachable from the tests); only offered.
[[models]]
slug = "{GATED}"
name = "Gated test model"
provider = "hugging_face"
gated = true
accelerator_slugs = ["{specs.SLUG}"]
sources = {{ "llama.cpp" = "hf:inferd-tests/gated-chat" }}
"""
expect.set_options(timeout=20_000)  # a shared 2-core machine: pages and polls may take a while
POSITIVE = re.compile(r"^(?:[1-9]|0\.0*[1-9])")
"""A number above zero, as the charts' data-peak attribute writes it."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    build = subprocess.run(["bash", "scripts/build-console.sh"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"scripts/build-console.sh failed:\n{build.stdout}\n{build.stderr}"
    directory = tmp_path_factory.mktemp("console")
    # the packaged default catalog (SmolLM2 first, so still the form's default) and a gated model
    catalog = directory / "catalog.toml"
    catalog.write_text((REPO / "src" / "inferd" / "config" / "default_catalog.toml").read_text() + GATED_MODEL)
    with running_server(
        "sqlite", directory / "inferd", controller=True, gateway=True,
        INFERD_RATE_LIMIT_PER_MINUTE="100000", INFERD_RATE_LIMIT_PER_HOUR="1000000",
        INFERD_METRICS_PORT=str(free_port()), INFERD_CATALOG_FILE=str(catalog),
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def user(browser: Browser, server: Server) -> Iterator[Session]:
    session = Session(browser, server)
    yield session
    session.close()


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    """What one test of the scenario leaves for the next (the instance's id, ...)."""
    return {}


def open_instance(user: Session, shared: dict[str, Any], tab: str = "") -> Page:
    page = user.page
    page.goto(f"/console/instances/{shared['id']}" + (f"/{tab}" if tab else ""))
    expect(page.get_by_role("heading", name=NAME, exact=True)).to_be_visible()
    return page


def test_the_console_is_served_with_strict_headers(server: Server) -> None:
    with httpx.Client(base_url=server.url, verify=server.ssl_context(), timeout=30) as http:
        page = http.get("/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "connect-src 'self' http: https:"):
            assert directive in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-cache"
        assert "<script" in page.text and "<script>" not in page.text  # a module file, no inline code
        # every client-side route is the same page
        assert http.get("/console/instances/6b5c619c-359c-44ca-87e2-47e98170c01d/tokens").text == page.text
        script = re.search(r'src="(/console/assets/main-[A-Z0-9]+\.js)"', page.text)
        assert script, page.text
        asset = http.get(script.group(1))
        assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/javascript")
        assert "immutable" in asset.headers["cache-control"] and asset.headers["x-content-type-options"] == "nosniff"
        assert http.get("/console/assets/missing-AAAAAAAA.js").status_code == 404
        assert http.get("/console/assets/..%2f..%2fconsole.py").status_code == 404
        assert http.get("/console/assets/third-party-licenses.txt").text.count("MIT") >= 3  # preact, htm, uplot
        assert http.get("/v2/dedicated-inferences").status_code == 401  # the API is untouched


def test_sign_in_refuses_a_wrong_token(user: Session) -> None:
    page = user.page
    page.goto("/console")
    expect(page.get_by_label("API token")).to_be_focused()
    assert_accessible(page, "the sign-in page")
    shot(page, "sign-in")
    page.get_by_label("API token").fill("dop_v1_" + "0" * 64)
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("refused this token (401)")
    page.get_by_label("API token").fill("not a token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("dop_v1_ followed by 64")
    user.sign_in(user.server.admin_token)
    expect(page.get_by_text("This team has no Dedicated Inference instance yet.")).to_be_visible()
    assert_accessible(page, "the empty list")
    assert page.evaluate("sessionStorage.getItem('inferd.token')") == user.server.admin_token
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []


def test_a_gated_model_asks_for_a_hugging_face_token(user: Session) -> None:
    page = user.page
    page.get_by_role("link", name="Create instance").first.click()
    expect(page.get_by_label("Model")).to_have_value(specs.MODEL)
    expect(page.get_by_label("Hugging Face token")).to_have_count(0)
    page.get_by_label("Model").select_option(GATED)
    token = page.get_by_label("Hugging Face token")
    expect(token).to_be_visible()
    expect(token).to_have_attribute("type", "password")
    expect(token).to_have_js_property("required", True)
    expect(token).to_have_accessible_description(re.compile("Gated test model is a gated model"))
    # submitted empty: the form says which field is missing, marks it and puts the focus on it
    page.get_by_role("button", name="Create instance").click()
    expect(page.get_by_role("alert")).to_contain_text("Hugging Face token:")
    expect(token).to_be_focused()
    expect(token).to_have_attribute("aria-invalid", "true")
    assert_accessible(page, "the create form of a gated model, refused")
    # back to SmolLM2: no token field, no complaint about it
    page.get_by_label("Model").select_option(specs.MODEL)
    expect(page.get_by_label("Hugging Face token")).to_have_count(0)
    expect(page.get_by_role("alert")).to_have_count(0)
    page.get_by_role("link", name="Cancel").click()
    expect(page.get_by_text("This team has no Dedicated Inference instance yet.")).to_be_visible()  # nothing created


def test_create_an_instance_through_the_form(user: Session, shared: dict[str, Any]) -> None:
    page = user.page
    page.get_by_role("link", name="Create instance").first.click()
    # the choices come from /sizes and /gpu-model-config
    expect(page.get_by_label("Accelerator")).to_be_enabled()
    expect(page.get_by_label("Region")).to_have_value(specs.REGION)
    expect(page.get_by_label("Accelerator")).to_have_value(specs.SLUG)
    expect(page.get_by_label("Model")).to_have_value(specs.MODEL)
    expect(page.get_by_label("Public endpoint")).to_be_checked()
    expect(page.get_by_label("Hugging Face token")).to_have_count(0)  # the model is not gated
    page.get_by_label("Name").fill(NAME)
    assert_accessible(page, "the create form")
    shot(page, "create")
    page.get_by_role("button", name="Create instance").click()

    expect(page.get_by_role("heading", name=f"Instance {NAME} created")).to_be_visible()
    token = page.get_by_label("Access token for its endpoints (shown once)")
    expect(token).to_have_value(re.compile(r"^di_[0-9a-f]{48}$"))
    href = page.get_by_role("link", name=f"Open {NAME}").get_attribute("href")
    assert href and href.startswith("/console/instances/")
    shared["id"] = href.rsplit("/", 1)[1]

    page.get_by_role("link", name="Back to instances").click()
    row = page.locator(f"tr[data-instance-id='{shared['id']}']")
    expect(row.get_by_role("link", name=NAME)).to_be_visible()
    expect(row.locator("[data-status]")).to_have_text("active", timeout=90_000)  # the list polls
    expect(page.locator("#list-summary")).to_have_text("1 instance: 1 active.")
    assert_accessible(page, "the list")
    shot(page, "instances")

    row.get_by_role("link", name=NAME).click()
    expect(page.get_by_role("heading", name=NAME, exact=True)).to_be_focused()  # focus follows navigation
    expect(page.locator(".status-line [data-status]")).to_have_text("active")
    expect(page.locator("#accelerators tbody tr")).to_have_count(1)


def test_the_playground_streams_through_the_public_endpoint(user: Session, shared: dict[str, Any]) -> None:
    page = open_instance(user, shared, "playground")
    page.get_by_role("button", name="Create a playground token").click()
    expect(page.locator("#playground-token-hint")).to_contain_text("Created token playground-")
    expect(page.get_by_label("Access token (di_…)")).to_have_value(re.compile(r"^di_"))
    page.get_by_label("Max tokens").fill("96")
    # Record every state of the answer being streamed: several growing partial texts prove the
    # browser rendered the stream as it came, not one answer at the end.
    page.evaluate(
        """() => {
          window.__partials = [];
          new MutationObserver(() => {
            const node = document.getElementById('streaming-answer');
            if (node) window.__partials.push(node.textContent.length);
          }).observe(document.getElementById('chat-log'), {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.get_by_label("Message").fill("Write a short poem about the sea.")
    page.get_by_label("Message").press("Enter")
    expect(page.locator("#playground-status")).to_contain_text("Answered in", timeout=60_000)
    answer = page.locator(".message.assistant .text")
    expect(answer).to_have_count(1)
    expect(answer).to_have_text(re.compile(r"\w"))
    partials = page.evaluate("window.__partials")
    assert len({n for n in partials if n > 0}) >= 2, partials
    expect(page.locator("#playground-status")).to_contain_text("first token after")
    expect(page.get_by_label("Message")).to_be_focused()
    assert_accessible(page, "the playground")
    shot(page, "playground")
    # a second turn keeps the conversation
    page.get_by_label("Message").fill("Thank you!")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message.assistant .text")).to_have_count(2, timeout=60_000)
    expect(page.locator(".message.user")).to_have_count(2)


def test_the_charts_show_the_traffic(user: Session, shared: dict[str, Any]) -> None:
    page = user.page
    page.get_by_role("link", name="Overview").click()
    # samples were taken every 2 s while the chat ran on the other tab
    expect(page.locator("figure[data-metric=requests]")).to_have_attribute("data-peak", POSITIVE, timeout=30_000)
    expect(page.locator("figure[data-metric=tokens]")).to_have_attribute("data-peak", POSITIVE)
    expect(page.locator("figure[data-metric=ttft]")).to_have_attribute("data-peak", POSITIVE)
    expect(page.locator("#traffic-totals")).to_contain_text(re.compile(r"started: [1-9]\d* requests"))
    expect(page.locator(".chart canvas")).to_have_count(4)
    # endpoints, copy buttons and snippets
    endpoint = page.locator("#public-endpoint").inner_text()
    assert endpoint.endswith(shared["id"])
    page.get_by_role("button", name="Copy public endpoint").click()
    assert page.evaluate("navigator.clipboard.readText()") == endpoint
    snippet = page.get_by_role("region", name="Use it")
    expect(snippet.locator("pre").first).to_contain_text(f"curl -s {endpoint}/v1/chat/completions")
    expect(snippet.locator("pre").nth(1)).to_contain_text(f'base_url="{endpoint}/v1"')
    expect(snippet.locator("pre").nth(1)).to_contain_text(specs.MODEL)
    assert_accessible(page, "the instance's overview with its charts")
    if SCREENSHOTS:  # a fuller picture for the docs: some seconds of traffic
        token = json.loads(page.evaluate(f"sessionStorage.getItem('inferd.playground.{shared['id']}')"))["value"]
        traffic = threading.Thread(target=some_traffic, args=(endpoint, token))
        traffic.start()
        traffic.join(timeout=120)
        points = int(page.locator("figure[data-metric=requests]").get_attribute("data-points") or 0)
        expect(page.locator("figure[data-metric=requests]")).to_have_attribute("data-points", str(points + 2))
    shot(page, "instance")


def test_a_rate_limited_token_pauses_the_updates(user: Session) -> None:
    """The API's 429 (faked here: the test server's budget is huge) pauses every poll for its
    retry-after and shows one notice, not an error per section; then the updates resume."""
    page = user.page  # the overview, as the charts test left it
    points = page.locator("figure[data-metric=requests]")
    expect(points).to_have_attribute("data-points", POSITIVE)
    refused: list[float] = []

    def refuse(route: Route) -> None:
        refused.append(time.monotonic())
        route.fulfill(status=429, headers={"retry-after": "2", "ratelimit-remaining": "0"}, content_type="application/json",
                      body=json.dumps({"id": "too_many_requests", "message": "API rate limit exceeded.", "request_id": "r"}))

    page.route("**/v2/dedicated-inferences/**", refuse)
    try:
        notice = page.locator("#rate-limit-notice")
        expect(notice).to_contain_text("429")  # at the next poll (metrics: every 5 s)
        expect(page.get_by_role("alert")).to_have_count(0)  # one notice, no error wall
        expect(page.get_by_role("heading", name="Traffic")).to_be_visible()  # the page keeps what it showed
        # every poll waits out retry-after: nothing is asked until 2 s after the first 429
        wait_while_browsing(page, lambda: any(t > refused[0] + 1 for t in refused), what="the polls trying again")
        assert [t for t in refused if refused[0] + 0.5 < t < refused[0] + 1.9] == [], [t - refused[0] for t in refused]
    finally:
        page.unroute("**/v2/dedicated-inferences/**")
    before = int(points.get_attribute("data-points") or 0)
    expect(notice).to_have_count(0)
    expect(points).not_to_have_attribute("data-points", str(before))  # sampling again
    expect(page.get_by_role("alert")).to_have_count(0)


def test_tokens_are_shown_once_and_revoked(user: Session, shared: dict[str, Any], server: Server) -> None:
    page = open_instance(user, shared, "tokens")
    page.get_by_label("Token name").fill("ci-bot")
    page.get_by_role("button", name="Create token").click()
    value_box = page.get_by_label("Value of token ci-bot")
    expect(value_box).to_have_value(re.compile(r"^di_[0-9a-f]{48}$"))
    value = value_box.input_value()
    row = page.locator("#token-table tbody tr", has_text="ci-bot")
    expect(row).to_have_count(1)
    assert_accessible(page, "the tokens tab with a new token's value")
    shot(page, "tokens")

    with server.client(server.admin_token) as api:
        endpoint = api.get(f"/v2/dedicated-inferences/{shared['id']}").json()["dedicated_inference"]["endpoints"]["public_endpoint_fqdn"]
    models = f"{endpoint}/v1/models"
    assert httpx.get(models, headers={"Authorization": f"Bearer {value}"}, timeout=30).status_code == 200

    page.get_by_role("button", name="I have saved it, hide it").click()
    expect(page.get_by_label("Value of token ci-bot")).to_have_count(0)
    page.reload()
    expect(row).to_have_count(1)
    assert value not in page.content()  # shown once, never listed

    row.get_by_role("button", name="Revoke ci-bot").click()
    dialog = page.get_by_role("dialog", name="Revoke token ci-bot?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()  # the safe choice first
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    row.get_by_role("button", name="Revoke ci-bot").click()
    dialog.get_by_role("button", name="Revoke token").click()
    expect(page.get_by_role("status").filter(has_text="Token ci-bot revoked")).to_be_visible()
    expect(row).to_have_count(0)
    wait_for(lambda: httpx.get(models, headers={"Authorization": f"Bearer {value}"}, timeout=30).status_code == 401,
             timeout=10, what="the revoked token refused")


def test_scale_the_instance(user: Session, shared: dict[str, Any]) -> None:
    page = open_instance(user, shared, "settings")
    scale = page.get_by_label(f"Scale of {specs.MODEL} on {specs.SLUG}")
    expect(scale).to_have_value("1")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#update-notice")).to_have_text("Nothing to change: the form matches the current spec.")
    scale.fill("2")
    expect(page.locator("#update-notice")).to_have_count(0)  # an edit clears what was said
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#update-notice")).to_contain_text("Update accepted: version 2 is rolling out")
    assert_accessible(page, "the settings tab")
    shot(page, "settings")
    page.get_by_role("link", name="Overview").click()
    # the live spec becomes version 2 once its replicas are ready; then nothing is pending
    spec = page.get_by_role("region", name="Spec")
    expect(spec).to_contain_text(f"{specs.SLUG} × 2", timeout=90_000)
    expect(page.locator("#pending-spec")).to_have_count(0, timeout=90_000)
    expect(page.locator(".status-line [data-status]")).to_have_text("active")
    expect(page.locator("#accelerators tbody tr")).to_have_count(2)


def test_another_team_sees_nothing(browser: Browser, server: Server, shared: dict[str, Any]) -> None:
    other = Session(browser, server)
    try:
        other.sign_in(server.new_team("console-other"))
        page = other.page
        expect(page.get_by_text("This team has no Dedicated Inference instance yet.")).to_be_visible()
        expect(page.get_by_text(NAME)).to_have_count(0)
        page.goto(f"/console/instances/{shared['id']}")
        expect(page.get_by_role("heading", name="Instance not found")).to_be_visible()
        assert other.script_errors == [] and other.csp_violations == []
    finally:
        other.close()


def test_a_narrow_screen(browser: Browser, server: Server, shared: dict[str, Any]) -> None:
    phone = Session(browser, server, width=390, height=844)
    try:
        phone.sign_in(server.admin_token)
        page = phone.page
        row = page.locator(f"tr[data-instance-id='{shared['id']}']")
        expect(row.locator("[data-status]")).to_have_text("active")
        # the table turns into cards: nothing wider than the screen
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert_accessible(page, "the list on a 390 px screen")
        shot(page, "instances-narrow")
        page.goto(f"/console/instances/{shared['id']}")
        expect(page.get_by_role("heading", name=NAME, exact=True)).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        phone.close()


def test_delete_with_confirmation(user: Session, shared: dict[str, Any], server: Server) -> None:
    page = open_instance(user, shared, "settings")
    page.get_by_role("button", name="Delete instance…").click()
    dialog = page.get_by_role("dialog", name=f"Delete {NAME}?")
    confirm = dialog.get_by_role("button", name="Delete instance")
    expect(dialog.get_by_label("Instance name")).to_be_focused()
    expect(confirm).to_be_disabled()
    dialog.get_by_label("Instance name").fill(NAME + "x")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("Instance name").fill(NAME)
    expect(confirm).to_be_enabled()
    assert_accessible(page, "the delete dialog")
    shot(page, "delete", full_page=False)  # a modal dialog: the viewport as seen
    confirm.click()

    expect(page.get_by_role("heading", name="Instances", exact=True)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text=f"Deleting {NAME}")).to_be_visible()
    expect(page.locator(f"tr[data-instance-id='{shared['id']}']")).to_have_count(0, timeout=60_000)
    expect(page.get_by_text("This team has no Dedicated Inference instance yet.")).to_be_visible()
    with server.client(server.admin_token) as api:
        assert api.get(f"/v2/dedicated-inferences/{shared['id']}").status_code == 404


def test_sign_out_forgets_the_token(user: Session) -> None:
    page = user.page
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("Object.keys(sessionStorage).filter((k) => k.startsWith('inferd.'))") == []
    page.reload()
    expect(page.get_by_label("API token")).to_be_visible()


def test_no_script_error_nor_csp_violation(user: Session) -> None:
    assert user.script_errors == []
    assert user.csp_violations == []
