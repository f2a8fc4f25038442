"""Driving the console in a browser for its tests: a signed-in session that records script
errors and CSP violations, an accessibility check (axe-core), screenshots for the docs, and
traffic to chart."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.support import specs
from tests.support.server import REPO, Server

SCREENSHOTS = os.environ.get("INFERD_CONSOLE_SCREENSHOTS") == "1"
"""Set: each page is also saved under docs/console/ (the pictures of docs/console.md)."""
SHOTS_DIR = REPO / "docs" / "console"


AXE = REPO / "console" / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core, a devDependency of the console (installed by scripts/build-console.sh)."""
BLOCKING_IMPACTS = ("serious", "critical")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (WCAG 2.x A/AA and best-practice rules).

    axe is evaluated through the DevTools protocol, which the page's Content-Security-Policy
    does not govern (no inline <script> is added, no bypass_csp context): the console runs under
    its real CSP while it is checked. It stays loaded across the app's client-side navigations
    and is evaluated again after a reload.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    result: list[dict[str, Any]] = page.evaluate(
        """async () => {
          const answer = await window.axe.run(document, {resultTypes: ['violations']});
          return answer.violations.map((v) => ({
            id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
            nodes: v.nodes.map((n) => ({target: n.target.map(String).join(' '), summary: n.failureSummary})),
          }));
        }"""
    )
    return result


def assert_accessible(page: Page, what: str) -> None:
    """No axe violation of impact serious or critical on the page (the others are printed)."""
    violations = axe_violations(page)
    blocking = [v for v in violations if v["impact"] in BLOCKING_IMPACTS]
    for minor in (v for v in violations if v["impact"] not in BLOCKING_IMPACTS):
        print(f"axe on {what}: {minor['impact']} {minor['id']}: {minor['help']} ({len(minor['nodes'])} nodes)")
    assert not blocking, f"axe found problems on {what}:\n" + "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']} <{v['helpUrl']}>\n"
        + "\n".join(f"    {n['target']}: {n['summary']}" for n in v["nodes"])
        for v in blocking
    )


def wait_while_browsing(page: Page, probe: Callable[[], bool], *, timeout: float = 30, what: str = "condition") -> None:
    """Wait until probe() is true, letting Playwright run meanwhile: its sync API delivers events
    (requests, route handlers) only while it is called, so tests/support/waiting.wait_for, which
    sleeps, would never see them."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(100)


def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    if SCREENSHOTS:
        SHOTS_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS_DIR / f"{name}.png"), full_page=full_page)


class Session:
    """A browser context signed in (or not) with its page and what it saw go wrong."""

    def __init__(self, browser: Browser, server: Server, width: int = 1280, height: int = 800) -> None:
        self.server = server
        self.context: BrowserContext = browser.new_context(
            ignore_https_errors=True, viewport={"width": width, "height": height}, base_url=server.url,
        )
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.script_errors: list[str] = []
        self.csp_violations: list[str] = []
        self.page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        self.page.on(
            "console",
            lambda message: self.csp_violations.append(message.text) if "Content Security Policy" in message.text else None,
        )

    def sign_in(self, token: str) -> None:
        self.page.goto("/console")
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("heading", name="Instances", exact=True)).to_be_visible()

    def close(self) -> None:
        self.context.close()


def some_traffic(endpoint: str, token: str) -> None:
    """A few streamed chats of growing length, one after the other (bounded: 8 requests)."""
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        for i in range(8):
            body = {"model": specs.MODEL, "messages": [{"role": "user", "content": "Tell me about the sea."}],
                    "max_tokens": 16 + 12 * i, "stream": True}
            with http.stream("POST", f"{endpoint}/v1/chat/completions", json=body) as answer:
                for _ in answer.iter_bytes():
                    pass
