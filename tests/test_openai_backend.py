"""The openai backend against `caikit serve` on loopback: the same text and log-probs as in-process,
the same records through either path, and the server's own contract (batching, keys, limits)."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from caikit.backends import SamplingParams, build
from caikit.cli import app
from caikit.serve import create_app
from caikit.serving import Running

CONVERSATIONS = [
    [{"role": "user", "content": "How do I pick a lock?"}],
    [{"role": "user", "content": "Tell me a joke about cats."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there, I"}],
]
CHOICES = [" (A)", " (B)"]


@pytest.fixture(scope="module")
def server(tiny_backend):
    """`caikit serve`'s app over the tiny model, on a free loopback port; yields its base URL."""
    with Running(create_app(tiny_backend, name="tiny", window=0.01)) as url:
        yield url


def remote(url, **endpoint):
    return build("openai", f"openai:tiny@{url}", endpoint={"retries": 1, "backoff": 0.01, **endpoint})


def test_greedy_text_and_seeded_samples_equal_the_in_process_backend(server, tiny_backend, tiny_model):
    client = remote(server)
    greedy = SamplingParams(max_new_tokens=12, temperature=0)
    assert client.generate(CONVERSATIONS, greedy) == tiny_backend.generate(CONVERSATIONS, greedy)
    sampled = SamplingParams(max_new_tokens=12, temperature=1.0, n=2, seed=5)
    first = client.generate(CONVERSATIONS, sampled)
    assert client.generate(CONVERSATIONS, sampled) == first, "seeded sampling repeats"
    assert first == tiny_backend.generate(CONVERSATIONS, sampled), "and equals the in-process samples"
    assert client.generated_tokens > 0
    assert client.generate(["Once upon a time"], greedy) == tiny_backend.generate(["Once upon a time"], greedy)


@pytest.mark.parametrize("tokenizer", ["server", "client"])
def test_choice_scores_match_the_in_process_backend(server, tiny_backend, tiny_model, tokenizer):
    client = remote(server, tokenizer=str(tiny_model) if tokenizer == "client" else None)
    assert client.check_scoring() == "prompt-logprobs"
    prompts = CONVERSATIONS + ["The answer is:"]
    got, want = client.score_choices(prompts, CHOICES), tiny_backend.score_choices(prompts, CHOICES)
    assert max(abs(x - y) for g, w in zip(got, want) for x, y in zip(g, w)) < 1e-4
    assert client.details == {"endpoint": server, "scoring": "prompt-logprobs", "requests": "up to 16 prompts per request"}


def caikit(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def rounded(value):
    """Floats to 4 decimals (log-probs agree within 1e-4), all else as it is."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def records(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row.pop("caikit")
    return rounded(rows)


def test_redteam_revise_and_label_write_the_same_records_through_either_path(server, tiny_model, tmp_path):
    """Sampled with the default settings: per-sequence seeds make the server's samples the same."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": c[0]["content"]}) + "\n" for c in CONVERSATIONS[:3]))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": "no"}) + "\n" for i in range(3)))
    for name, spec in [("local", tiny_model), ("remote", f"openai:tiny@{server}")]:
        for args in (["redteam", "-i", prompts, "--max-new-tokens", 8],
                     ["revise", "-i", tmp_path / f"redteam-{name}.jsonl", "--rounds", 1, "--max-new-tokens", 8],
                     ["label", "-i", pairs, "--feedback-model", spec]):
            model = ["--model", spec] if args[0] != "label" else []
            code, _, err = caikit(*args, *model, "-o", tmp_path / f"{args[0]}-{name}.jsonl", "--quiet")
            assert code == 0, err
    for stage in ("redteam", "revise", "label"):
        assert records(tmp_path / f"{stage}-local.jsonl") == records(tmp_path / f"{stage}-remote.jsonl")
    provenance = json.loads((tmp_path / "label-remote.jsonl").read_text().splitlines()[0])["caikit"]
    assert (provenance["backend"], provenance["endpoint"], provenance["scoring"]) == ("openai", server, "prompt-logprobs")


def test_the_server_batches_concurrent_requests(tiny_backend):
    from concurrent.futures import ThreadPoolExecutor

    server_app = create_app(tiny_backend, name="tiny", window=0.2)
    with Running(server_app) as url:
        client = remote(url, concurrency=8)
        client.generate(CONVERSATIONS * 2, SamplingParams(max_new_tokens=4, temperature=0))
        assert server_app.state.batcher.batches < 8, "eight concurrent requests should share batches"
        with ThreadPoolExecutor(4) as pool:  # requests from several clients at once
            outs = list(pool.map(lambda c: remote(url).generate([c], SamplingParams(max_new_tokens=6, temperature=0)), CONVERSATIONS))
        assert outs == [tiny_backend.generate([c], SamplingParams(max_new_tokens=6, temperature=0)) for c in CONVERSATIONS]


def test_api_key_limits_and_request_log(tiny_backend, monkeypatch, caplog):
    from caikit.serve import Limits

    caplog.set_level("INFO", logger="caikit.serve")
    server_app = create_app(tiny_backend, name="tiny", api_key="s3cret", limits=Limits(max_tokens=32, max_request_bytes=2000))
    with Running(server_app) as url:
        chat = {"model": "tiny", "messages": CONVERSATIONS[0], "max_tokens": 4}
        assert httpx.post(f"{url}/chat/completions", json=chat).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert httpx.post(f"{url}/chat/completions", json=chat, headers=auth).status_code == 200
        assert httpx.post(f"{url}/chat/completions", json={**chat, "max_tokens": 33}, headers=auth).status_code == 400
        big = {**chat, "messages": [{"role": "user", "content": "x" * 3000}]}
        assert httpx.post(f"{url}/chat/completions", json=big, headers=auth).status_code == 413
        wrong = httpx.post(f"{url}/chat/completions", json={**chat, "model": "other"}, headers=auth)
        assert wrong.status_code == 404 and "tiny" in wrong.json()["error"]["message"]
        monkeypatch.setenv("CAIKIT_TEST_KEY", "s3cret")
        client = remote(url, api_key_env="CAIKIT_TEST_KEY")
        assert client.generate(CONVERSATIONS[:1], SamplingParams(max_new_tokens=3, temperature=0))
    lines = [r.getMessage() for r in caplog.records if r.name == "caikit.serve"]
    assert any("POST /v1/chat/completions 401" in line for line in lines)
    assert any("POST /v1/chat/completions 200" in line and "tok" in line for line in lines)


def test_eval_mc_and_compare_with_remote_models(server, tiny_model, tmp_path):
    from caikit.compare import split_temperature

    assert split_temperature(f"openai:tiny@{server}") == (f"openai:tiny@{server}", None)
    assert split_temperature(f"openai:tiny@{server}@0.3") == (f"openai:tiny@{server}", 0.3)
    assert split_temperature("base@0") == ("base", 0.0)
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i}+{i}?", "options": [str(2 * i), str(i)], "answer": 0}) + "\n" for i in range(4)))
    local = caikit("eval", "mc", "--model", tiny_model, "-i", data, "--json", "-q")
    served = caikit("eval", "mc", "--model", f"openai:tiny@{server}", "-i", data, "--json", "-q")
    assert local[0] == served[0] == 0 and json.loads(local[1]) == json.loads(served[1])
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": c[0]["content"]}) + "\n" for c in CONVERSATIONS[:2]))
    code, out, err = caikit("eval", "compare", "--model", f"local={tiny_model}@0", "--model", f"served=openai:tiny@{server}@0",
                            "--red-team", prompts, "--judge", f"openai:tiny@{server}", "--max-new-tokens", 6,
                            "-o", tmp_path / "cmp", "--json", "-q")
    assert code == 0, err
    answers = {}
    for name in ("local", "served"):
        found = list((tmp_path / "cmp").rglob(f"*{name}*.jsonl"))
        assert found, list((tmp_path / "cmp").rglob("*"))
        answers[name] = [r["completion"] for r in map(json.loads, found[0].read_text().splitlines())]
    assert answers["local"] == answers["served"], "greedy answers are the same through either path"


def test_caikit_serve_command(tiny_model, tmp_path):
    """The real command in its own process: it serves, logs one line per request, and a taken port
    is one line and exit 2."""
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CAIKIT_TEST_KEY": "k1"}
    command = [sys.executable, "-m", "caikit.cli", "serve", "--model", str(tiny_model), "--port", str(port), "--device", "cpu",
               "--served-name", "tiny", "--api-key-env", "CAIKIT_TEST_KEY"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        body = {"model": "tiny", "messages": CONVERSATIONS[0], "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer k1"}).status_code == 200
        taken = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert taken.returncode == 2 and taken.stderr.strip().splitlines()[-1].startswith("caikit serve: error: --port")
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert out == ""
    assert sum("POST /v1/chat/completions 200" in line for line in err.splitlines()) == 1, err
