"""The client's contexts file: named (API URL, CA file, token) triples, like doctl's config.

The token is kept in plain text, as doctl keeps its own, so the file is written with mode 0600
in a directory with mode 0700; anyone who can read it can act as that token.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from inferd.cli.client.spec_input import yaml_problem

CONFIG_ENV = "INFERD_CONFIG"


class ConfigError(Exception):
    """The contexts file cannot be read or does not have what was asked for."""


@dataclass(frozen=True)
class Context:
    api_url: str
    token: str
    ca_file: str | None = None


@dataclass(frozen=True)
class Config:
    current: str | None = None
    contexts: dict[str, Context] = field(default_factory=dict)

    def get(self, name: str) -> Context:
        if name not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise ConfigError(f"no context {name!r} (contexts: {known}); create it with: inferd auth init --context {name}")
        return self.contexts[name]


def default_path() -> Path:
    """``$INFERD_CONFIG``, else ``${XDG_CONFIG_HOME:-~/.config}/inferd/config.yaml``."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "inferd" / "config.yaml"


def load(path: Path) -> Config:
    """The file's contexts; an empty config when the file does not exist yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(exc)}") from exc
    return from_document(document, path)


def from_document(document: Any, path: Path | str = "config") -> Config:
    if not isinstance(document, dict) or not isinstance(document.get("contexts") or {}, dict):
        raise ConfigError(f"{path}: expected a mapping with 'contexts'")
    contexts: dict[str, Context] = {}
    for name, entry in (document.get("contexts") or {}).items():
        if not isinstance(entry, dict) or not entry.get("api_url") or not entry.get("token"):
            raise ConfigError(f"{path}: context {name!r} needs api_url and token")
        contexts[str(name)] = Context(str(entry["api_url"]), str(entry["token"]),
                                      str(entry["ca_file"]) if entry.get("ca_file") else None)
    current = document.get("current_context")
    return Config(str(current) if current else None, contexts)


def to_document(config: Config) -> dict[str, Any]:
    contexts: dict[str, Any] = {}
    for name, context in config.contexts.items():
        entry: dict[str, Any] = {"api_url": context.api_url, "token": context.token}
        if context.ca_file:
            entry["ca_file"] = context.ca_file
        contexts[name] = entry
    return {"current_context": config.current, "contexts": contexts}


def save(path: Path, config: Config) -> None:
    """Write atomically: a 0600 temporary file beside it, renamed over the old one. A directory
    made for it is 0700; an existing one keeps its mode (``--config ~/x.yaml``: not $HOME's to change)."""
    try:
        _write(path, config)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _write(path: Path, config: Config) -> None:
    try:
        path.parent.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(path.parent, 0o700)  # mkdir's mode is masked by the umask
    fd, temporary = tempfile.mkstemp(prefix=".config-", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(to_document(config), handle, sort_keys=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def with_context(config: Config, name: str, context: Context) -> Config:
    """Add or replace ``name``; it becomes current only when nothing is current yet (as doctl)."""
    contexts = {**config.contexts, name: context}
    current = config.current if config.current in contexts else name
    return replace(config, contexts=contexts, current=current)


def switched(config: Config, name: str) -> Config:
    config.get(name)
    return replace(config, current=name)


def without_context(config: Config, name: str) -> Config:
    config.get(name)
    contexts = {k: v for k, v in config.contexts.items() if k != name}
    return replace(config, contexts=contexts, current=None if config.current == name else config.current)
