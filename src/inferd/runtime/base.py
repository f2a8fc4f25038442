"""What the controller needs from a place that runs replicas."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from inferd.engines.base import LaunchSpec


@dataclass(frozen=True)
class ProcessRef:
    """A running replica: its pid and the kernel's start time of that pid (guards pid reuse)."""

    pid: int
    started: str


class Runtime(Protocol):
    def start(self, replica_id: str, launch: LaunchSpec, log_path: Path) -> ProcessRef: ...

    def is_running(self, ref: ProcessRef) -> bool: ...

    def terminate(self, ref: ProcessRef) -> None: ...

    def kill(self, ref: ProcessRef) -> None: ...

    def discover(self) -> dict[str, ProcessRef]:
        """Replicas of this installation that are running, by replica id (found after a crash)."""
        ...
