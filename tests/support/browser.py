"""Driving the console in a browser for its tests: a signed-in session that records script
errors and CSP violations, screenshots for the docs, and traffic to chart."""

from __future__ import annotations

import os

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.support import specs
from tests.support.server import REPO, Server

SCREENSHOTS = os.environ.get("INFERD_CONSOLE_SCREENSHOTS") == "1"
"""Set: each page is also saved under docs/console/ (the pictures of docs/console.md)."""
SHOTS_DIR = REPO / "docs" / "console"


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
