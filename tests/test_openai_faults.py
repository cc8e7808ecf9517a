"""The openai backend when servers misbehave: retried faults lose and duplicate nothing; exhausted
retries stop the stage (exit 1) resumably; refusals that retrying cannot fix exit 2 in one line."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from typer.testing import CliRunner

from caikit.backends import build
from caikit.backends.openai_backend import _retry_after, distinguishing
from caikit.cli import app
from caikit.serve import create_app
from caikit.serving import Running


class Faults:
    """ASGI middleware in front of caikit serve's app: POST number k gets `plan[k % len(plan)]`, or
    every POST after the first `fail_after` gets HTTP 500."""

    def __init__(self, app, plan=("ok",), fail_after=None, slow=1.5):
        self.app, self.plan, self.fail_after, self.slow = app, plan, fail_after, slow
        self.count = 0
        self.seen: dict[str, int] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        k, self.count = self.count, self.count + 1
        fault = self.plan[k % len(self.plan)]
        if self.fail_after is not None and k >= self.fail_after:
            fault = "500"
        self.seen[fault] = self.seen.get(fault, 0) + 1
        if fault == "429":
            return await reply(send, 429, b'{"error": {"message": "slow down"}}', [(b"retry-after", b"0.05")])
        if fault == "500":
            return await reply(send, 500, b'{"error": {"message": "boom"}}')
        if fault == "malformed":
            return await reply(send, 200, b'{"choices": [')
        if fault == "drop":  # headers promise a body that never comes; the connection closes
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
            raise ConnectionResetError("dropped on purpose")
        if fault == "slow":
            await asyncio.sleep(self.slow)
        return await self.app(scope, receive, send)


async def reply(send, status, body, headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers]})
    await send({"type": "http.response.body", "body": body})


PLAN = ("ok", "429", "ok", "500", "ok", "drop", "ok", "slow", "ok", "malformed")


def caikit(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def ids_of(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def texts(path):
    return {r["id"]: r["completion"] for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Question number {i}: how?"}) + "\n" for i in range(8)))
    return path


def test_retried_faults_lose_and_duplicate_nothing(tiny_backend, tiny_model, prompts, tmp_path):
    faults = Faults(create_app(tiny_backend, name="tiny", window=0.01), PLAN)
    code, _, err = caikit("redteam", "-i", prompts, "-o", tmp_path / "local.jsonl", "--model", tiny_model, "--max-new-tokens", 6, "--quiet")
    assert code == 0, err
    with Running(faults) as url:
        spec = f"openai:tiny@{url}?timeout=1&backoff=0.01&retries=8&concurrency=2"
        code, _, err = caikit("redteam", "-i", prompts, "-o", tmp_path / "remote.jsonl", "--model", spec, "--max-new-tokens", 6, "--quiet")
    assert code == 0, err
    assert set(faults.seen) == set(PLAN), f"every kind of fault happened: {faults.seen}"
    assert sorted(ids_of(tmp_path / "remote.jsonl")) == sorted(ids_of(tmp_path / "local.jsonl"))
    assert len(set(ids_of(tmp_path / "remote.jsonl"))) == 8
    assert texts(tmp_path / "remote.jsonl") == texts(tmp_path / "local.jsonl")


def test_exhausted_retries_stop_the_stage_and_resume_completes_it(tiny_backend, tiny_model, prompts, tmp_path):
    out = tmp_path / "out.jsonl"
    faults = Faults(create_app(tiny_backend, name="tiny", window=0.01), fail_after=4)
    with Running(faults) as url:
        spec = f"openai:tiny@{url}?backoff=0.01&retries=2&concurrency=1"
        args = ["redteam", "-i", prompts, "-o", out, "--model", spec, "--max-new-tokens", 6, "--batch-size", 4, "--quiet"]
        code, stdout, err = caikit(*args)
        assert code == 1 and stdout == ""
        last = err.strip().splitlines()[-1]  # after the retries' warnings
        assert last.startswith("caikit redteam: error: ") and "HTTP 500" in last and "--resume" in last
        assert not out.exists() and len(ids_of(tmp_path / "out.jsonl.partial")) == 4
        faults.fail_after = None
        code, _, err = caikit(*args, "--resume")
    assert code == 0, err
    assert len(ids_of(out)) == len(set(ids_of(out))) == 8, "every record exactly once"
    code, _, err = caikit("redteam", "-i", prompts, "-o", tmp_path / "local.jsonl", "--model", tiny_model, "--max-new-tokens", 6, "--quiet")
    assert texts(out) == texts(tmp_path / "local.jsonl"), "the resumed run equals an uninterrupted one"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_exit_2(args, *expected, output=None):
    code, stdout, err = caikit(*args, "--quiet")  # (--quiet also hushes the in-process server's request log)
    assert code == 2, err
    assert stdout == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for text in expected:
        assert text in err, err
    if output is not None:
        assert not output.exists() and not output.with_name(output.name + ".partial").exists()


def test_refusals_exit_2_in_one_line(tiny_backend, prompts, tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    one_line_exit_2(["redteam", "-i", prompts, "-o", out, "--model", f"openai:tiny@http://127.0.0.1:{free_port()}/v1"],
                    "cannot reach the server", output=out)
    one_line_exit_2(["redteam", "-i", prompts, "-o", out, "--model", "openai:tiny"], "OPENAI_BASE_URL", output=out)
    one_line_exit_2(["redteam", "-i", prompts, "--model", "openai:tiny@http://x/v1?colour=red"], "unknown option 'colour=red'")
    import logging

    from caikit import serving

    # the server runs in this process: its own warning about the refused request is not the client's stderr
    quiet = logging.getLogger("tests.quiet-server")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    monkeypatch.setattr(serving, "log", quiet)
    with Running(create_app(tiny_backend, name="tiny", api_key="right")) as url:
        monkeypatch.setenv("WRONG_KEY", "wrong")
        one_line_exit_2(["redteam", "-i", prompts, "-o", out, "--model", f"openai:tiny@{url}", "--api-key-env", "WRONG_KEY"],
                        "HTTP 401", "$WRONG_KEY is set", output=out)
        assert "wrong" not in caikit("redteam", "-i", prompts, "--model", f"openai:tiny@{url}", "--api-key-env", "WRONG_KEY")[2]
        monkeypatch.setenv("RIGHT_KEY", "right")
        one_line_exit_2(["redteam", "-i", prompts, "-o", out, "--model", f"openai:gpt-9@{url}", "--api-key-env", "RIGHT_KEY"],
                        "no model 'gpt-9'", "it serves tiny", output=out)


def test_a_server_without_log_probabilities_cannot_label(tmp_path):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "plain", "object": "model"}]})

    async def chat(request):
        return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant", "content": "(A)"}}]})

    async def refuse(request):
        return JSONResponse({"error": {"message": "echo is not supported"}}, status_code=400)

    plain = Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"]),
                              Route("/v1/completions", refuse, methods=["POST"]), Route("/tokenize", refuse, methods=["POST"])])
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    out = tmp_path / "labels.jsonl"
    with Running(plain) as url:
        one_line_exit_2(["label", "-i", pairs, "-o", out, "--feedback-model", f"openai:plain@{url}"],
                        "cannot score choices", "no top_logprobs", output=out)


def test_top_logprobs_approximation(tmp_path):
    """A hosted-API-like server: no prompt log-probs, top log-probs of the answer's tokens."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    steps = [{" The": -0.1, " (": -2.0}, {" answer": -0.01}, {" (": -0.2, " is": -1.9}, {"B": -0.3, "A": -1.4, "C": -5.0}]

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "hosted", "object": "model"}]})

    async def chat(request):
        content = [{"token": max(s, key=s.get), "logprob": max(s.values()),
                    "top_logprobs": [{"token": t, "logprob": v} for t, v in s.items()]} for s in steps]
        return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is (B)"},
                                          "logprobs": {"content": content}}]})

    async def refuse(request):
        return JSONResponse({"error": {"message": "not here"}}, status_code=404)

    hosted = Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"]),
                               Route("/v1/completions", refuse, methods=["POST"]), Route("/tokenize", refuse, methods=["POST"])])
    with Running(hosted) as url:
        backend = build("openai", f"openai:hosted@{url}?retries=0")
        assert backend.check_scoring() == "top-logprobs"
        assert backend.score_choices([[{"role": "user", "content": "Which?"}]], [" (A)", " (B)"]) == [[-1.4, -0.3]]
        assert backend.score_choices(["Which?"], [" (A)", " (D)"]) == [[-1.4, -5.0]], "a choice not listed gets the floor"
        assert backend.details["scoring"] == "top-logprobs"


def test_helpers():
    assert distinguishing([" (A)", " (B)"]) == ["A", "B"]
    assert distinguishing([" Yes", " No"]) == ["Yes", "No"]
    assert _retry_after("2") == 2.0 and _retry_after(None) is None and _retry_after("soon") is None
    assert 0 <= _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.mark.parametrize("prompt, path", [("a plain prompt", "/v1/completions"), ([{"role": "user", "content": "hi"}], "/v1/chat/completions")])
def test_too_few_samples_name_the_endpoint_that_was_asked(monkeypatch, prompt, path):
    from caikit.backends import SamplingParams
    from caikit.backends.openai_backend import Endpoint, OpenAIBackend, ServerError

    backend = OpenAIBackend("m", Endpoint("http://127.0.0.1:9/v1", retries=0))
    monkeypatch.setattr(backend, "post", lambda *a, **k: {"choices": [{"index": 0, "text": "x", "message": {"content": "x"}}]})
    with pytest.raises(ServerError, match=f"{path}: asked for 2 samples, got 1"):
        backend.generate([prompt], SamplingParams(n=2, temperature=1.0, max_new_tokens=4))
