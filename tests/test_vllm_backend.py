"""The vLLM backend's glue, checked against a stand-in `vllm` module that runs the tiny HF model.

The stand-in implements the small part of vLLM's API the backend uses (LLM.generate with
TokensPrompt requests, SamplingParams, prompt_logprobs); the real engine is exercised on GPU
machines. The point here: token bookkeeping gives exactly the transformers backend's scores.
"""

import sys
import types
from dataclasses import dataclass

import pytest
import torch

from caikit.backends import SamplingParams
from caikit.backends.vllm_backend import VllmBackend


@dataclass
class FakeParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    stop: list | None = None
    seed: int | None = None
    skip_special_tokens: bool = True
    prompt_logprobs: int | None = None


class FakeLLM:
    def __init__(self, loaded):
        self.model, self.tok = loaded.model, loaded.tokenizer
        self.requests = []

    def generate(self, requests, params, use_tqdm=False):
        self.requests.append((requests, params))
        results = []
        for request in requests:
            ids = request["prompt_token_ids"]
            if params.prompt_logprobs is not None:
                with torch.no_grad():
                    logp = self.model(torch.tensor([ids])).logits[0].log_softmax(-1)
                entries = [None] + [{t: types.SimpleNamespace(logprob=logp[k - 1, t].item())} for k, t in enumerate(ids) if k > 0]
                results.append(types.SimpleNamespace(prompt_logprobs=entries, outputs=[]))
                continue
            torch.manual_seed(params.seed or 0)
            outputs = []
            for _ in range(params.n):
                out = self.model.generate(torch.tensor([ids]), max_new_tokens=params.max_tokens, do_sample=False, pad_token_id=self.tok.pad_token_id)
                new = out[0, len(ids):].tolist()
                outputs.append(types.SimpleNamespace(text=self.tok.decode(new, skip_special_tokens=True), token_ids=new))
            results.append(types.SimpleNamespace(outputs=outputs, prompt_logprobs=None))
        return results


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.SamplingParams = FakeParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    module.inputs = inputs
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return module


PROMPTS = [
    [{"role": "user", "content": "Which is kinder?"}, {"role": "assistant", "content": "The answer is:"}],
    [{"role": "user", "content": "Why is the sky blue?"}],
    "The answer is:",
]


def test_score_choices_match_the_transformers_backend(fake_vllm, tiny_backend):
    backend = VllmBackend(FakeLLM(tiny_backend.loaded), tiny_backend.loaded.tokenizer, "tiny")
    choices = [" (A)", " (B)", " a longer choice"]
    assert backend.score_choices(PROMPTS, choices) == [pytest.approx(row, abs=1e-4) for row in tiny_backend.score_choices(PROMPTS, choices)]
    per_prompt = [[" yes", " no"], [" (A)"], [" x", " y", " z"]]
    got = backend.score_choices(PROMPTS, per_prompt)
    assert [len(r) for r in got] == [2, 1, 3]
    requests, params = backend.llm.requests[-1]
    assert params.prompt_logprobs == 0 and params.max_tokens == 1 and len(requests) == 6


def test_generate_maps_params_and_keeps_prompt_major_order(fake_vllm, tiny_backend):
    llm = FakeLLM(tiny_backend.loaded)
    backend = VllmBackend(llm, tiny_backend.loaded.tokenizer, "tiny")
    greedy = SamplingParams(max_new_tokens=6, temperature=0, seed=4)
    assert backend.generate(PROMPTS[1:], greedy) == tiny_backend.generate(PROMPTS[1:], greedy)
    backend.generate(PROMPTS[1:], SamplingParams(max_new_tokens=6, temperature=0, stop=("\n",), seed=4))
    requests, params = llm.requests[-1]
    assert params.max_tokens == 6 and params.stop == ["\n"] and params.seed == 4 and params.temperature == 0
    assert requests[0]["prompt_token_ids"] == tiny_backend.encode(PROMPTS[1])
    sampled = backend.generate(PROMPTS[1:], SamplingParams(max_new_tokens=4, n=3, temperature=1.0))
    assert len(sampled) == 6 and backend.generated_tokens > 0


def test_missing_vllm_is_a_clear_error(monkeypatch):
    from caikit import backends
    from caikit.errors import CaikitError

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(CaikitError, match="--backend vllm: vLLM is not installed"):
        backends.build("vllm", "smollm2-135m-instruct")


def test_vllm_chatter_goes_to_stderr_and_the_judge_of_rlaif_uses_it(fake_vllm, tiny_model, tmp_path, monkeypatch):
    """vLLM prints and logs to stdout by default; caikit's stdout must stay JSONL only."""
    import json
    import logging

    from typer.testing import CliRunner

    from caikit import models
    from caikit.cli import app
    from caikit.errors import CaikitError

    started = []

    class ChattyLLM(FakeLLM):
        def __init__(self, model, **settings):
            started.append(settings)
            print("INFO engine starting on stdout")
            logger = logging.getLogger("vllm.engine")
            logger.addHandler(logging.StreamHandler(sys.stdout))
            logger.setLevel(logging.INFO)
            super().__init__(models.load(model, device="cpu"))

        def generate(self, requests, params, use_tqdm=False):
            logging.getLogger("vllm.engine").info("INFO a batch went by")
            return super().generate(requests, params, use_tqdm)

    fake_vllm.LLM = ChattyLLM
    result = CliRunner().invoke(app, ["redteam", "--backend", "vllm", "--model", str(tiny_model), "--max-new-tokens", "4", "--vllm-memory", "0.4",
                                      "-q"], input="One prompt?\nAnother prompt?\n")
    assert result.exit_code == 0, result.stderr
    assert started[-1]["gpu_memory_utilization"] == 0.4  # a flag, as in rlaif
    assert [json.loads(line)["caikit"]["backend"] for line in result.stdout.splitlines()] == ["vllm", "vllm"]
    assert "INFO engine starting" in result.stderr and "a batch went by" in result.stderr
    logging.getLogger("vllm.engine").handlers.clear()  # (bound to the finished run's streams)
    # rlaif's direct-feedback judge (and the reference policy) are built by --backend too
    from caikit import rlaif
    from caikit.cli.options import Engine

    prompts = tmp_path / "p.txt"
    prompts.write_text("One prompt?\nAnother prompt?\n")
    options = rlaif.RlOptions(max_new_tokens=4)
    reward, described = rlaif.build_reward(f"feedback:{tiny_model}", str(tiny_model), [(str(prompts), 1.0)], options,
                                           constitution="default", mode="vs-reference", engine=Engine(backend="vllm"))
    assert reward.scorer.backend().name == "vllm" and described["backend"] == "vllm"
    assert len(reward([[{"role": "user", "content": "One prompt?"}]], [[{"role": "assistant", "content": "Sure."}]])) == 1
    seen = {}

    def capture(spec, policy, sources, options, *, constitution, mode, principles, engine, opponents=4):
        seen["engine"] = engine
        raise CaikitError("stop here")

    monkeypatch.setattr(rlaif, "build_reward", capture)
    result = CliRunner().invoke(app, ["rlaif", "--reward", f"feedback:{tiny_model}", "--backend", "vllm", "-i", str(prompts),
                                      "--batch-size", "8", "--feedback-batch-size", "5", "--vllm-memory", "0.3", "-o", str(tmp_path / "rl")])
    assert "stop here" in result.stderr and seen["engine"].backend == "vllm"
    assert (seen["engine"].batch_size, seen["engine"].vllm_memory) == (5, 0.3)  # the feedback model's own batch, not training's
    logging.getLogger("vllm.engine").handlers.clear()
