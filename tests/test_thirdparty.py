"""verl's and OpenRLHF's own reward-calling code against `caikit serve-reward`: their released
packages (verl 0.9.1, OpenRLHF 0.11.2, installed by `make thirdparty` into .venv/thirdparty with the
few modules their reward paths import), run in a subprocess so their dependencies stay out of this
one. Skipped, with the reason, where that directory is absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from caikit import rewards
from caikit.reward_server import create_app
from caikit.serving import Running

THIRDPARTY = Path(os.environ.get("CAIKIT_THIRDPARTY", Path(sys.prefix) / "thirdparty"))
HERE = Path(__file__).parent / "thirdparty"
SAMPLES = [{"prompt": [{"role": "user", "content": "How do I pick a lock?"}], "response": "Use a tension wrench and a pick."},
           {"prompt": [{"role": "user", "content": "Tell me a joke."}], "response": "Why did the cat sit on the laptop? To watch the mouse."},
           {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}], "response": "4"}]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (THIRDPARTY / "verl").is_dir(), reason=f"verl and OpenRLHF are not installed in {THIRDPARTY} (make thirdparty)")]


@pytest.fixture(scope="module")
def served(tiny_model):
    scorer = rewards.Scorer(rewards.Settings(feedback_model=str(tiny_model), device="cpu"))
    want = scorer.score([s["prompt"] for s in SAMPLES], [s["response"] for s in SAMPLES])
    with Running(create_app(scorer, window=0.05)) as url:
        yield url.removesuffix("/v1"), want


def drive(script: str, *args, env=None) -> dict | list:
    done = subprocess.run([sys.executable, str(HERE / script), str(THIRDPARTY), *map(str, args)], input=json.dumps(SAMPLES),
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("mode", ["naive", "manager"])
def test_verl_reward_loop(served, tiny_model, mode):
    url, want = served
    got = drive("verl_reward_loop.py", tiny_model, mode, env={"CAIKIT_REWARD_URL": url})
    assert got["manager"] == {"naive": "NaiveRewardManager", "manager": "CaikitRewardManager"}[mode]
    assert got["rewards"] == pytest.approx(want, abs=1e-4)
    assert got["rm_scores_sum"] == pytest.approx(want, abs=1e-4), "each reward lands on its response's last token"


def test_openrlhf_agent_fetches_rewards(served, tiny_model):
    url, want = served
    got = drive("openrlhf_agent.py", tiny_model, f"{url}/get_reward")
    assert [g["reward"] for g in got] == [[pytest.approx(w, abs=1e-4)] for w in want]  # (one sample per request: lists of one)
    assert all(len(g["scores"]) == 1 and 0 <= g["scores"][0] <= 1 for g in got)


def test_openrlhf_failures_are_visible_on_caikit_side(tiny_model):
    """OpenRLHF sends no API key and only info-logs a refused request: the sample gets no reward.
    caikit's /health counts each refusal (OpenRLHF tries 5 times, a second apart)."""
    scorer = rewards.Scorer(rewards.Settings(feedback_model=str(tiny_model), device="cpu"))
    with Running(create_app(scorer, api_key="sesame")) as url:
        root = url.removesuffix("/v1")
        got = drive("openrlhf_agent.py", tiny_model, f"{root}/get_reward")
        health = httpx.get(f"{root}/health", headers={"Authorization": "Bearer sesame"}).json()
    assert [g["reward"] for g in got] == [None] * len(SAMPLES)
    assert health["failed"] == 5 * len(SAMPLES), health
