"""`caikit serve-reward` as OpenRLHF and verl call it: requests built the way those projects build
them, rewards equal to the in-process scorer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from caikit import rewards
from caikit.reward_server import create_app
from caikit.serving import Running

PROMPTS = [[{"role": "user", "content": "How do I pick a lock?"}], [{"role": "user", "content": "Tell me a joke."}],
           [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]]
RESPONSES = ["Use a tension wrench and a pick.", "Why did the cat sit on the laptop? To keep an eye on the mouse.", "4"]
# A reward computed in a batch of other rows goes through matmuls of other shapes, whose sums round
# differently: the same request differed by 7.2e-6 between batches with torch's AVX2 kernels on an
# Intel Xeon. Rewards of different texts differ by far more than this bound.
ROUNDING = 1e-4


@pytest.fixture(scope="module", params=["pm", "constitutional"])
def served(request, tiny_model, tiny_pm):
    """(base URL, in-process scorer) for a PM reward and a constitutional reward on the tiny model."""
    if request.param == "pm":
        settings = rewards.Settings(pm=str(tiny_pm), device="cpu")
    else:
        settings = rewards.Settings(feedback_model=str(tiny_model), device="cpu")
    scorer = rewards.Scorer(settings)
    with Running(create_app(scorer, window=0.05)) as url:
        yield url.removesuffix("/v1"), scorer


def openrlhf_request(tiny_model, with_prompts=True) -> dict:
    """The body OpenRLHF posts (0.11.2: openrlhf/utils/agent.py, one sample per request; older
    releases sent several): queries are prompt + response rendered with the policy's chat template
    (the eos token ends a sequence), prompts the rendered prompts, labels the dataset's label column.
    OpenRLHF's own code posts it in tests/test_thirdparty.py."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in PROMPTS]
    queries = [p + r + tok.eos_token for p, r in zip(prompts, RESPONSES)]
    body = {"query": queries, "prompts": prompts, "labels": ["", "", ""]}
    if not with_prompts:
        del body["prompts"], body["labels"]  # older OpenRLHF sent the queries alone
    return body


@pytest.mark.parametrize("with_prompts", [True, False])
def test_openrlhf_remote_reward_request(served, tiny_model, with_prompts):
    url, scorer = served
    reply = httpx.post(f"{url}/get_reward", json=openrlhf_request(tiny_model, with_prompts), timeout=60)
    assert reply.status_code == 200, reply.text
    got = reply.json()
    assert got["rewards"] == pytest.approx(scorer.score(PROMPTS, RESPONSES), abs=ROUNDING)
    assert len(got["scores"]) == 3 and all(0 <= s <= 1 for s in got["scores"])
    assert list(got["extra_logs"].values())[0] == got["rewards"]


def test_verl_compute_score_as_its_reward_managers_call_it(served, monkeypatch):
    """verl's naive manager calls compute_score(data_source=, solution_str=, ground_truth=,
    extra_info=) per sample; verl <= 0.6's batch manager calls compute_score(data_sources=,
    solution_strs=, ground_truths=, extra_infos=) once per batch. verl 0.9.1's own reward loop
    calls them in tests/test_thirdparty.py."""
    from caikit.integrations import verl

    url, scorer = served
    monkeypatch.setenv("CAIKIT_REWARD_URL", url)
    want = scorer.score(PROMPTS, RESPONSES)
    one = [verl.compute_score(data_source="cai", solution_str=r, ground_truth="", extra_info={"prompt": p, "index": 0})
           for p, r in zip(PROMPTS, RESPONSES)]
    assert one == pytest.approx(want, abs=ROUNDING)
    batch = verl.compute_score_batch(data_sources=["cai"] * 3, solution_strs=RESPONSES, ground_truths=[None] * 3,
                                     extra_infos=[{"question": p[-1]["content"]} if len(p) == 1 else {"prompt": p} for p in PROMPTS])
    assert batch == pytest.approx(want, abs=ROUNDING)
    with pytest.raises(ValueError, match="extra_info has no prompt"):
        verl.compute_score(data_source="cai", solution_str="x", ground_truth="", extra_info={"index": 3})


def test_verl_awaits_compute_score_async_many_samples_at_once(served, monkeypatch):
    """verl 0.9's reward-loop managers await a coroutine compute_score (naive.py checks
    inspect.iscoroutinefunction); the samples in flight together get the in-process rewards."""
    import asyncio
    import inspect

    from caikit.integrations import verl

    url, scorer = served
    monkeypatch.setenv("CAIKIT_REWARD_URL", url)
    assert inspect.iscoroutinefunction(verl.compute_score_async) and not inspect.iscoroutinefunction(verl.compute_score)

    async def all_at_once():
        return await asyncio.gather(*[verl.compute_score_async(data_source="cai", solution_str=r, ground_truth="", extra_info={"prompt": p})
                                      for p, r in zip(PROMPTS, RESPONSES)])

    assert asyncio.run(all_at_once()) == pytest.approx(scorer.score(PROMPTS, RESPONSES), abs=ROUNDING)


def test_concurrent_requests_share_batches(served):
    url, scorer = served
    body = {"prompts": PROMPTS[:1], "responses": RESPONSES[:1]}
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: httpx.post(f"{url}/v1/score", json=body, timeout=60).json()["rewards"][0], range(8)))
    assert replies == pytest.approx([replies[0]] * 8, abs=ROUNDING)


def test_bad_requests_and_reference_mode(tiny_model):
    scorer = rewards.Scorer(rewards.Settings(feedback_model=str(tiny_model), device="cpu", mode="vs-reference"))
    with Running(create_app(scorer, api_key="k")) as url:
        url, auth = url.removesuffix("/v1"), {"Authorization": "Bearer k"}
        assert httpx.post(f"{url}/get_reward", json={"query": ["x"]}).status_code == 401
        assert httpx.post(f"{url}/get_reward", json={"query": "x"}, headers=auth).status_code == 400
        missing = httpx.post(f"{url}/v1/score", json={"prompts": ["Hi"], "responses": ["Hello"]}, headers=auth)
        assert missing.status_code == 400 and "reference" in missing.json()["error"]["message"]
        same = httpx.post(f"{url}/v1/score", json={"prompts": ["Hi"], "responses": ["Hello"], "references": ["Hello"]}, headers=auth)
        assert same.json()["rewards"] == pytest.approx([0.5], abs=1e-6)
        assert httpx.get(f"{url}/health").json()["reward"] == "constitutional"


def test_verl_client_waits_between_tries_not_after_the_last(monkeypatch):
    import httpx

    from caikit.integrations import verl

    waits = []
    monkeypatch.setenv("CAIKIT_REWARD_URL", "http://127.0.0.1:9")
    monkeypatch.setattr(verl.time, "sleep", waits.append)
    monkeypatch.setattr(httpx, "post", lambda *a, **k: httpx.Response(503))
    with pytest.raises(RuntimeError, match="kept failing"):
        verl._post(["p"], ["r"], [None], tries=3)
    assert waits == [1, 2]
