"""Bad requests to `caikit serve` and `caikit serve-reward`, as a careless or hostile client sends
them: each gets a 4xx with a one-line message, never a 500 or a 200, and the server answers a good
request afterwards."""

from __future__ import annotations

import httpx
import pytest

from caikit import rewards
from caikit.reward_server import create_app as reward_app
from caikit.serve import create_app
from caikit.serving import Running

USER = [{"role": "user", "content": "Hi"}]
CHAT = {"model": "tiny", "messages": USER, "max_tokens": 4, "temperature": 0}
DEEP = "[" * 100_000 + "]" * 100_000


def raw(body: str) -> dict:
    return {"content": body.encode("utf-8", "surrogatepass"), "headers": {"content-type": "application/json"}}


SERVE_CASES = [
    ("not JSON", "/v1/chat/completions", raw("{")),
    ("a JSON list", "/v1/chat/completions", {"json": [CHAT]}),
    ("no messages", "/v1/chat/completions", {"json": {"model": "tiny"}}),
    ("an unknown role", "/v1/chat/completions", {"json": {**CHAT, "messages": [{"role": "wizard", "content": "Hi"}]}}),
    ("content not text", "/v1/chat/completions", {"json": {**CHAT, "messages": [{"role": "user", "content": 3}]}}),
    ("NaN temperature", "/v1/chat/completions", raw('{"messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}')),
    ("infinite temperature", "/v1/chat/completions", raw('{"messages": [{"role": "user", "content": "Hi"}], "temperature": Infinity}')),
    ("temperature as text", "/v1/chat/completions", {"json": {**CHAT, "temperature": "hot"}}),
    ("negative max_tokens", "/v1/chat/completions", {"json": {**CHAT, "max_tokens": -1}}),
    ("too many samples", "/v1/chat/completions", {"json": {**CHAT, "n": 1000, "temperature": 1}}),
    ("a deeply nested body", "/v1/chat/completions", raw(DEEP)),
    ("a lone surrogate", "/v1/chat/completions", raw('{"messages": [{"role": "user", "content": "\\ud800"}]}')),
    ("another model", "/v1/chat/completions", {"json": {**CHAT, "model": "other"}}),
    ("streaming", "/v1/chat/completions", {"json": {**CHAT, "stream": True}}),
    ("no prompt", "/v1/completions", {"json": {"model": "tiny"}}),
    ("too many prompts", "/v1/completions", {"json": {"prompt": ["a"] * 65}}),
    ("token ids out of range", "/v1/completions", {"json": {"prompt": [10**9]}}),
    ("max_tokens 0 without echo", "/v1/completions", {"json": {"prompt": "a", "max_tokens": 0}}),
    ("a lone surrogate in a prompt", "/v1/completions", raw('{"prompt": "a\\udfff"}')),
    ("tokenize nothing", "/tokenize", {"json": {}}),
]

REWARD_CASES = [
    ("not JSON", "/v1/score", raw("{")),
    ("no responses", "/v1/score", {"json": {"prompts": ["q"]}}),
    ("lengths differ", "/v1/score", {"json": {"prompts": ["q"], "responses": ["a", "b"]}}),
    ("an unknown role", "/v1/score", {"json": {"prompts": [[{"role": "wizard", "content": "q"}]], "responses": ["a"]}}),
    ("a deeply nested body", "/v1/score", raw(DEEP)),
    ("a lone surrogate", "/v1/score", raw('{"prompts": ["\\ud800"], "responses": ["a"]}')),
    ("NaN in the body", "/v1/score", raw('{"prompts": ["q"], "responses": ["a"], "x": NaN}')),
    ("too many items", "/v1/score", {"json": {"prompts": ["q"] * 1025, "responses": ["a"] * 1025}}),
    ("queries not text", "/get_reward", {"json": {"query": [1, 2]}}),
    ("too many queries", "/get_reward", {"json": {"query": ["q"] * 1025}}),
]


@pytest.fixture(scope="module")
def serve_url(tiny_backend):
    with Running(create_app(tiny_backend, name="tiny", window=0.01)) as url:
        yield url.removesuffix("/v1")


@pytest.fixture(scope="module")
def reward_url(tiny_model):
    scorer = rewards.Scorer(rewards.Settings(feedback_model=str(tiny_model), device="cpu"))
    with Running(reward_app(scorer, window=0.01)) as url:
        yield url.removesuffix("/v1")


def check(url: str, path: str, request: dict) -> None:
    reply = httpx.post(url + path, timeout=60, **request)
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text[:200])
    message = reply.json()["error"]["message"]
    assert message and "\n" not in message


@pytest.mark.parametrize("name, path, request_", SERVE_CASES, ids=[c[0] for c in SERVE_CASES])
def test_serve_answers_a_bad_request_with_a_4xx(serve_url, name, path, request_):
    check(serve_url, path, request_)
    good = httpx.post(serve_url + "/v1/chat/completions", json=CHAT, timeout=60)
    assert good.status_code == 200 and good.json()["choices"][0]["message"]["content"] is not None


@pytest.mark.parametrize("name, path, request_", REWARD_CASES, ids=[c[0] for c in REWARD_CASES])
def test_serve_reward_answers_a_bad_request_with_a_4xx(reward_url, name, path, request_):
    check(reward_url, path, request_)
    good = httpx.post(reward_url + "/v1/score", json={"prompts": [USER], "responses": ["Hello."]}, timeout=60)
    assert good.status_code == 200 and 0 <= good.json()["rewards"][0] <= 1


def test_serve_reward_counts_and_logs_its_failures(tiny_model, caplog):
    """OpenRLHF only info-logs a failed reward reply: the server logs each at warning and counts it."""
    caplog.set_level("INFO", logger="caikit.serve")
    scorer = rewards.Scorer(rewards.Settings(feedback_model=str(tiny_model), device="cpu"))
    with Running(reward_app(scorer, window=0.01)) as url:
        base = url.removesuffix("/v1")
        assert httpx.post(base + "/get_reward", json={"query": [1]}, timeout=60).status_code == 400
        assert httpx.post(base + "/v1/score", content=b"{", headers={"content-type": "application/json"}, timeout=60).status_code == 400
        assert httpx.post(base + "/v1/score", json={"prompts": [USER], "responses": ["Hello."]}, timeout=60).status_code == 200
        health = httpx.get(base + "/health", timeout=60).json()
    assert (health["requests"], health["failed"], health["failed_by_status"]) == (3, 2, {"400": 2})
    assert health["last_failure"] == "400 /v1/score: the body is not JSON"
    warned = [r.getMessage() for r in caplog.records if r.name == "caikit.serve" and r.levelname == "WARNING"]
    assert len(warned) == 2 and "POST /get_reward 400" in warned[0] and "`query` must be a list of strings" in warned[0]
