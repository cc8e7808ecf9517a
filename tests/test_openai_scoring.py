"""How the openai backend scores choices on servers that differ: exact over prompt lists on `caikit
serve`, first-token with token ids asked for, an echo shifted by one token refused, and SGLang's
/tokenize form; each against the in-process backend's numbers."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from caikit.backends import build
from caikit.backends.openai_scoring import one_token_apart
from caikit.errors import CaikitError
from caikit.serve import create_app
from caikit.serving import Running

PROMPTS = [[{"role": "user", "content": "Which is kinder, (A) or (B)?"}, {"role": "assistant", "content": "The answer is:"}],
           [{"role": "user", "content": "Tell me a joke about cats."}], "The answer is:"]
CHOICES = [" (A)", " (B)"]


def proxy(inner, change_request=None, change_reply=None, seen=None):
    """An ASGI app passing requests to `inner`, with the request body and the reply JSON changed on
    the way (as another server would treat them); `seen` collects (path, body) of each request."""
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=inner), base_url="http://inner")

    async def forward(request: Request):
        raw = await request.body() or b"null"
        body = json.loads(raw)
        if seen is not None:
            seen.append((request.url.path, json.loads(raw)))
        refused = change_request(request.url.path, body) if change_request and body is not None else None
        if refused:
            return Response(json.dumps({"error": {"message": refused}}), status_code=400, media_type="application/json")
        reply = await client.request(request.method, request.url.path, json=body, headers={"authorization": request.headers.get("authorization", "")})
        data = reply.json()
        if change_reply and reply.status_code == 200:
            change_reply(request.url.path, body, data)
        return Response(json.dumps(data), status_code=reply.status_code, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])


@pytest.fixture(scope="module")
def inner(tiny_backend):
    return create_app(tiny_backend, name="tiny", window=0.01)


def remote(url, **endpoint):
    return build("openai", f"openai:tiny@{url}", endpoint={"retries": 0, "backoff": 0.01, **endpoint})


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_exact_scoring_sends_several_prompts_choices_in_one_request(inner, tiny_backend, batch_size):
    seen = []
    with Running(proxy(inner, seen=seen)) as url:
        client = build("openai", f"openai:tiny@{url}", endpoint={"retries": 0}, batch_size=batch_size)
        got = client.score_choices(PROMPTS, CHOICES)
    want = tiny_backend.score_choices(PROMPTS, CHOICES)
    assert max(abs(x - y) for g, w in zip(got, want) for x, y in zip(g, w)) < 1e-4
    assert client.details == {"endpoint": url, "scoring": "prompt-logprobs",
                              "requests": "one per prompt" if batch_size == 1 else f"up to {batch_size} prompts per request"}
    scored = [b for path, b in seen if path == "/v1/completions" and b.get("echo")][1:]  # (after the probe's)
    sizes = [min(batch_size, len(PROMPTS) - i) for i in range(0, len(PROMPTS), batch_size)]
    assert sorted(len(b["prompt"]) for b in scored) == sorted(2 * n for n in sizes)
    starts = [s for b in scored for s in b["logprob_start_len"]]
    assert len(starts) == 2 * len(PROMPTS) and all(s > 0 for s in starts), "caikit serve is told where each choice starts"


def test_first_token_scoring_asks_for_the_choices_token_ids(inner, tiny_backend, tiny_model):
    with Running(inner) as url:
        client = remote(url, scoring="first-token")
        got = client.score_choices(PROMPTS, CHOICES)
        assert client.details == {"endpoint": url, "scoring": "first-token", "requests": "token ids asked for"}
        with pytest.raises(CaikitError, match="one token apart"):
            client.score_choices(["Pick one"], [" yes", " certainly not"])
    tok = tiny_backend.tokenizer
    for prompt, scores in zip(PROMPTS, got):
        ids = tiny_backend.encode(prompt)
        tails = [tok(c, add_special_tokens=False)["input_ids"] for c in CHOICES]
        at = one_token_apart(tails)
        rows = [ids + t[: at + 1] for t in tails]
        want = [found[-1][0] for found in tiny_backend.prompt_logprobs(rows)]  # the differing token's log-prob
        assert scores == pytest.approx(want, abs=1e-4)


def test_one_token_apart():
    assert one_token_apart([[5, 7, 9], [5, 8, 9]]) == 1
    assert one_token_apart([[7], [8], [6]]) == 0
    assert one_token_apart([[5, 7, 9], [5, 8, 10]]) is None  # differ twice
    assert one_token_apart([[5, 7], [5, 7, 9]]) is None and one_token_apart([[5, 7], [5, 7]]) is None


def shift_echo(path, body, data):
    """llama-cpp-python 0.3's fault: each prompt token gets the log-prob its successor should."""
    if path == "/v1/completions" and body.get("echo"):
        for choice in data["choices"]:
            values, tops = choice["logprobs"]["token_logprobs"], choice["logprobs"]["top_logprobs"]
            choice["logprobs"]["token_logprobs"] = [None] + values[2:] + [-16.0]
            choice["logprobs"]["top_logprobs"] = [None] + tops[2:] + [{"\n": -0.5}]


def test_a_misaligned_echo_is_refused(inner, caplog):
    with Running(proxy(inner, change_reply=shift_echo)) as url:
        with caplog.at_level(logging.WARNING):
            assert remote(url).check_scoring() == "first-token"
        line = next(r.getMessage() for r in caplog.records if "first-token" in r.getMessage())
        assert url in line and "misaligned" in line
        with pytest.raises(CaikitError, match="misaligned"):
            remote(url, scoring="prompt-logprobs").check_scoring()


def test_without_token_ids_or_lists_each_choice_is_its_own_request(inner, tiny_backend):
    """A server that takes one prompt per request and knows no logprob_token_ids (as SGLang)."""
    def refuse(path, body):
        if path == "/v1/completions" and isinstance(body.get("prompt"), list) and isinstance(body["prompt"][0], list):
            return "one prompt per request"
        if body.get("logprob_token_ids"):
            return "unknown field logprob_token_ids"

    with Running(proxy(inner, change_request=refuse)) as url:
        exact = remote(url)
        got, want = exact.score_choices(PROMPTS, CHOICES), tiny_backend.score_choices(PROMPTS, CHOICES)
        assert max(abs(x - y) for g, w in zip(got, want) for x, y in zip(g, w)) < 1e-4
        assert exact.details["requests"] == "one per choice"
        first = remote(url, scoring="first-token")
        assert first.score_choices(PROMPTS, CHOICES) and first.details["requests"] == "top 20"


def test_sglang_tokenize_form_is_retried(inner, tiny_backend):
    """SGLang 0.5's /tokenize: continue_final_message needs add_generation_prompt left out or true."""
    def sglang(path, body):
        if path == "/tokenize" and body.get("continue_final_message") and body.get("add_generation_prompt") is False:
            return "continue_final_message needs add_generation_prompt to open the assistant turn."

    def sglang_render(path, body):  # ...and then renders as vLLM does with add_generation_prompt false
        if path == "/tokenize" and body.get("continue_final_message"):
            body["add_generation_prompt"] = False

    seen = []
    with Running(proxy(inner, change_request=lambda p, b: sglang(p, b) or sglang_render(p, b), seen=seen)) as url:
        client = remote(url)
        assert client.score_choices(PROMPTS[:1], CHOICES)[0] == pytest.approx(tiny_backend.score_choices(PROMPTS[:1], CHOICES)[0], abs=1e-4)
    assert any(path == "/tokenize" and "add_generation_prompt" not in b for path, b in seen)


def text_only(path, body):
    """A server that takes text prompts only, and answers echo with one generated token after them."""
    if path == "/v1/completions":
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        if not all(isinstance(p, str) for p in prompts):
            return "prompt must be a string or a list of strings"
        if body.get("echo") and body.get("max_tokens") == 1:
            body["max_tokens"] = 0  # (caikit serve's way of giving the same log-probs)


def test_text_only_servers_get_the_rendered_text(inner, tiny_backend, tiny_model):
    with Running(proxy(inner, change_request=text_only)) as url:
        client = remote(url, tokenizer=str(tiny_model))
        got, want = client.score_choices(PROMPTS, CHOICES), tiny_backend.score_choices(PROMPTS, CHOICES)
        assert max(abs(x - y) for g, w in zip(got, want) for x, y in zip(g, w)) < 1e-4
        assert client.details["scoring"] == "prompt-logprobs" and client.details["prompts"] == "text"
        with pytest.raises(CaikitError, match="cannot score choices") as refused:  # (and caikit serve has no chat log-probs)
            remote(url).check_scoring()
        assert "over text" not in str(refused.value), "without a tokenizer there is no text to send"
    with Running(proxy(inner, change_request=text_only, change_reply=shift_echo)) as url:
        client = remote(url, tokenizer=str(tiny_model))
        assert client.check_scoring() == "first-token" and client.details["prompts"] == "text"
        with Running(inner) as plain:
            by_ids = remote(plain, scoring="first-token").score_choices(PROMPTS, CHOICES)
        got = client.score_choices(PROMPTS, CHOICES)
        assert max(abs(x - y) for g, w in zip(got, by_ids) for x, y in zip(g, w)) < 1e-4
