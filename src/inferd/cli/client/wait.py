"""``--wait``: poll the API until an instance is active (or gone), showing how it gets there.

On a terminal a Rich spinner line shows status, replicas ready n/m and elapsed time, and each
transition stays printed above it; elsewhere one plain line is printed per transition. An
``error`` status ends the wait with its ``status_reason`` (exit 3), the deadline with exit 4.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from inferd.cli.client.http import ApiClient, ApiError
from inferd.cli.client.session import EXIT_WAIT_ERROR, EXIT_WAIT_TIMEOUT, fail
from inferd.cli.client.spec_input import desired_scale, desired_spec

FIRST_INTERVAL, MAX_INTERVAL = 0.25, 2.0


@dataclass(frozen=True)
class Progress:
    """One observation of an instance, as the wait shows it."""

    status: str
    ready: int
    wanted: int
    reason: str | None = None

    def text(self) -> str:
        line = f"{self.status}  replicas ready {self.ready}/{self.wanted}"
        return line + (f"  ({self.reason})" if self.reason else "")


def observe(instance: dict[str, Any], accelerators: list[dict[str, Any]]) -> Progress:
    """Replicas wanted: the sum of ``scale`` in the spec being rolled out; ready: active accelerators."""
    wanted = desired_scale(desired_spec(instance))
    ready = sum(1 for a in accelerators if a.get("status") == "active")
    return Progress(str(instance.get("status")), ready, wanted, instance.get("status_reason"))


def is_settled(instance: dict[str, Any]) -> bool:
    return instance.get("status") == "active" and not instance.get("pending_deployment_spec")


class Display:
    """Where progress goes: a live line on a terminal, plain lines otherwise."""

    def __init__(self, label: str) -> None:
        self.label, self.started, self.last = label, time.monotonic(), ""
        self.console = Console(stderr=True, highlight=False)
        self.live = self.console.is_terminal
        self.spinner = self.console.status("") if self.live else None
        if self.spinner:
            self.spinner.start()

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.0f} s"

    def show(self, text: str) -> None:
        if text != self.last:
            line = f"{self.label}: {text}  [{self.elapsed()}]"
            if self.live:
                self.console.print(line, markup=False)
            else:
                print(line, file=sys.stderr, flush=True)
            self.last = text
        if self.spinner:
            self.spinner.update(f"{self.label}: {text}  {self.elapsed()}")

    def close(self) -> None:
        if self.spinner:
            self.spinner.stop()


def _poll(probe: Callable[[], bool], display: Display, timeout: float, what: str) -> None:
    """Call ``probe`` until it returns true; a 429 waits for the budget instead of failing."""
    deadline = time.monotonic() + timeout
    interval = FIRST_INTERVAL
    try:
        while True:
            try:
                if probe():
                    return
            except ApiError as exc:
                if exc.status != 429:
                    raise
                display.show(f"rate limited; retrying in {exc.retry_after or MAX_INTERVAL:.0f} s")
                interval = min(max(exc.retry_after or MAX_INTERVAL, interval), 60.0)
            if time.monotonic() + interval > deadline:
                fail(f"{display.label}: still not {what} after {timeout:g} s ({display.last})", EXIT_WAIT_TIMEOUT)
            time.sleep(interval)
            interval = min(interval * 1.5, MAX_INTERVAL)
    finally:
        display.close()


def until_active(api: ApiClient, instance_id: str, *, timeout: float, label: str | None = None) -> dict[str, Any]:
    """The instance once it is ``active`` with nothing pending; exit 3 on ``error``, 4 on timeout."""
    display = Display(label or instance_id)
    final: dict[str, Any] = {}

    def probe() -> bool:
        instance = api.instance(instance_id)
        progress = observe(instance, api.accelerators(instance_id))
        display.show(progress.text())
        if instance.get("status") == "error":
            fail(f"{display.label} is in error: {instance.get('status_reason') or 'no reason given'}", EXIT_WAIT_ERROR)
        final.clear()
        final.update(instance)  # the latest answer whole: keys it dropped must go too
        return is_settled(instance) and progress.ready >= progress.wanted

    _poll(probe, display, timeout, "active")
    return final


def until_gone(api: ApiClient, instance_id: str, *, timeout: float, label: str | None = None) -> None:
    """Return once GET answers 404: the controller has torn the instance down and removed it."""
    display = Display(label or instance_id)

    def probe() -> bool:
        try:
            instance = api.instance(instance_id)
            display.show(observe(instance, api.accelerators(instance_id)).text())
        except ApiError as exc:
            if exc.status != 404:
                raise
            display.show("deleted")
            return True
        return False

    _poll(probe, display, timeout, "deleted")
