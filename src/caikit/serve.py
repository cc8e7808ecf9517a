"""`caikit serve`: one loaded model behind the OpenAI-compatible HTTP API that caikit's openai
backend speaks, so several pipeline processes (and machines) share it.

Routes: `GET /v1/models`, `POST /v1/chat/completions` (n, temperature, top_p, max_tokens, stop,
seed; `continue_final_message`), `POST /v1/completions` (text or token-id prompts, one or a list;
`echo` with `logprobs` and `max_tokens: 0` gives prompt log-probabilities, as vLLM does),
`POST /tokenize` (vLLM's shape: `prompt` or `messages`), `GET /health`.

Requests that arrive within a short window (`window` seconds) are run as one batch by a single
worker thread. Sampled rows have their own seeded generators (see caikit.backends.hf), so a seeded
request gets the same text whatever it is batched with, and the same text as the in-process backend.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field

from caikit.backends import SamplingParams, encode
from caikit.backends.hf import Row, TransformersBackend
from caikit.errors import CaikitError, FieldError

log = logging.getLogger("caikit.serve")


@dataclass
class Limits:
    max_tokens: int = 4096  # most new tokens per sample
    max_request_bytes: int = 8 * 2**20
    max_n: int = 16
    max_prompts: int = 64  # prompts in one completions request


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class _Job:
    kind: str  # which runner
    items: list
    options: dict = field(default_factory=dict)
    future: Future = field(default_factory=Future)


class Batcher:
    """Gathers the jobs that arrive within `window` seconds (up to `max_rows` items) and runs each
    kind's together in one worker thread: `runners[kind](items, jobs)` returns one result per item."""

    def __init__(self, runners: dict, window: float = 0.02, max_rows: int = 64):
        self.runners, self.window, self.max_rows = runners, window, max_rows
        self.batches = 0
        self._queue: queue.Queue[_Job] = queue.Queue()
        threading.Thread(target=self._loop, name="caikit-batcher", daemon=True).start()

    def submit(self, kind: str, items: list, **options) -> Future:
        job = _Job(kind, items, options)
        self._queue.put(job)
        return job.future

    async def run(self, kind: str, items: list, **options) -> list:
        return await asyncio.wrap_future(self.submit(kind, items, **options))

    def _loop(self):
        while True:
            jobs = [self._queue.get()]
            deadline = time.monotonic() + self.window
            while sum(len(j.items) for j in jobs) < self.max_rows:
                try:
                    jobs.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self.batches += 1
            for kind in self.runners:
                group = [j for j in jobs if j.kind == kind and j.future.set_running_or_notify_cancel()]
                if group:
                    self._run(kind, group)

    def _run(self, kind: str, jobs: list[_Job]):
        items = [item for job in jobs for item in job.items]
        try:
            results = self.runners[kind](items, jobs)
        except Exception as err:  # a failed batch fails its requests, not the server
            log.exception("batch failed")
            for job in jobs:
                job.future.set_exception(err)
            return
        start = 0
        for job in jobs:
            job.future.set_result(results[start : start + len(job.items)])
            start += len(job.items)


def logged(path: str, handler, methods: list[str], api_key: str | None):
    """A Starlette route whose errors are OpenAI-style JSON, with the bearer-token check and one log
    line per request."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def endpoint(request):
        started, status = time.monotonic(), 200
        try:
            if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
                raise BadRequest("missing or wrong API key", 401)
            result = await handler(request)
        except BadRequest as err:
            status, result = err.status, {"error": {"message": str(err), "type": "invalid_request_error", "code": err.status}}
        except Exception as err:  # noqa: BLE001 - one failed request must not stop the server
            log.exception("request failed")
            status, result = 500, {"error": {"message": f"{type(err).__name__}: {err}", "type": "server_error", "code": 500}}
        usage = result.get("usage") if status == 200 else None
        tokens = f" {usage['prompt_tokens']}+{usage['completion_tokens']} tok" if usage else ""
        client = request.client.host if request.client else "-"
        log.info("%s %s %s %d %.0f ms%s", client, request.method, path, status, 1000 * (time.monotonic() - started), tokens)
        return JSONResponse(result, status_code=status)

    return Route(path, endpoint, methods=methods)


async def json_body(request, max_bytes: int) -> dict:
    """The request's JSON object, at most `max_bytes` long."""
    import json

    if int(request.headers.get("content-length") or 0) > max_bytes:
        raise BadRequest(f"request larger than {max_bytes} bytes", 413)
    raw = await request.body()
    if len(raw) > max_bytes:
        raise BadRequest(f"request larger than {max_bytes} bytes", 413)
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def create_app(backend: TransformersBackend, *, name: str, api_key: str | None = None, window: float = 0.02,
               max_rows: int = 64, limits: Limits | None = None):
    """The ASGI app (Starlette) serving `backend` under the model id `name`."""
    from starlette.applications import Starlette

    limits = limits or Limits()
    runners = {"generate": lambda items, jobs: backend.generate_rows(items, details=True),
               "logprobs": lambda items, jobs: backend.prompt_logprobs(items, top=max(j.options["top"] for j in jobs))}
    batcher = Batcher(runners, window, max_rows)
    tok = backend._tok

    async def body_of(request) -> dict:
        body = await json_body(request, limits.max_request_bytes)
        if body.get("model", name) != name:
            raise BadRequest(f"no model {body.get('model')!r}; this server has {name!r}", 404)
        return body

    def sampling(body: dict, default_max: int) -> tuple[SamplingParams, int]:
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", default_max))
        n, stop = body.get("n", 1), body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(max_tokens, int) or not 0 <= max_tokens <= limits.max_tokens:
            raise BadRequest(f"max_tokens must be an integer from 0 to {limits.max_tokens}")
        if not isinstance(n, int) or not 1 <= n <= limits.max_n:
            raise BadRequest(f"n must be an integer from 1 to {limits.max_n}")
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise BadRequest("stop must be a string or a list of strings")
        seed = body.get("seed")
        seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
        try:
            params = SamplingParams(max_new_tokens=max(max_tokens, 1), temperature=float(body.get("temperature", 1.0)),
                                    top_p=float(body.get("top_p", 1.0)), stop=tuple(stop), seed=int(seed))
        except FieldError as err:
            raise BadRequest(str(err.named({"max_new_tokens": "max_tokens"}))) from None
        except (CaikitError, TypeError, ValueError) as err:
            raise BadRequest(str(err)) from None
        return params, n

    async def generate(ids_list: list[list[int]], params: SamplingParams, n: int):
        rows = [Row(ids, params, j) for ids in ids_list for j in range(n)]
        return await batcher.run("generate", rows)

    def reply(kind: str, choices: list, prompt_tokens: int, completion_tokens: int) -> dict:
        return {"id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex[:24]}", "object": kind,
                "created": int(time.time()), "model": name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    def conversation(messages) -> list:
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
        ):
            raise BadRequest("messages must be a non-empty list of {role, content} with string content")
        return [{"role": m["role"], "content": m["content"]} for m in messages]

    async def chat(request):
        body = await body_of(request)
        if body.get("logprobs") or body.get("stream"):
            raise BadRequest("caikit serve does not stream or return chat log-probabilities; "
                             "score with /v1/completions (echo, logprobs, max_tokens 0)")
        messages = conversation(body.get("messages"))
        params, n = sampling(body, 256)
        ids = encode(tok, messages)
        done = await generate([ids], params, n)
        choices = [{"index": j, "message": {"role": "assistant", "content": g.text}, "finish_reason": g.finish}
                   for j, g in enumerate(done)]
        return reply("chat.completion", choices, len(ids), sum(g.tokens for g in done))

    def prompts_of(prompt) -> list[list[int]]:
        if isinstance(prompt, str):
            prompt = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompt = [prompt]
        if not isinstance(prompt, list) or not prompt or len(prompt) > limits.max_prompts:
            raise BadRequest(f"prompt must be a string, a list of token ids, or a list of up to {limits.max_prompts} of them")
        out = []
        for p in prompt:
            if isinstance(p, str):
                out.append(tok(p)["input_ids"])
            elif isinstance(p, list) and p and all(isinstance(t, int) and 0 <= t < len(tok) for t in p):
                out.append(p)
            else:
                raise BadRequest("each prompt must be a non-empty string or a list of valid token ids")
        return out

    async def completions(request):
        body = await body_of(request)
        if body.get("stream"):
            raise BadRequest("caikit serve does not stream")
        ids_list = prompts_of(body.get("prompt"))
        params, n = sampling(body, 16)
        max_tokens = body.get("max_tokens", 16)
        echo, top = bool(body.get("echo")), body.get("logprobs")
        if max_tokens == 0 and not echo:
            raise BadRequest("max_tokens 0 needs echo")
        if top is not None and (max_tokens != 0 or not isinstance(top, int) or not 0 <= top <= 20):
            raise BadRequest("caikit serve gives log-probabilities of prompt tokens only: echo with max_tokens 0 and logprobs 0-20")
        prompt_tokens = sum(len(ids) for ids in ids_list)
        if max_tokens == 0:
            found = await batcher.run("logprobs", ids_list, top=max(top or 0, 1))
            choices = [{"index": i, "text": tok.decode(ids), "finish_reason": "length",
                        "logprobs": echoed(ids, f, top) if top is not None else None}
                       for i, (ids, f) in enumerate(zip(ids_list, found))]
            return reply("text_completion", choices, prompt_tokens, 0)
        done = await generate(ids_list, params, n)
        choices = [{"index": k, "text": (tok.decode(ids_list[k // n]) if echo else "") + g.text, "finish_reason": g.finish,
                    "logprobs": None} for k, g in enumerate(done)]
        return reply("text_completion", choices, prompt_tokens, sum(g.tokens for g in done))

    def echoed(ids: list[int], found: list, top: int) -> dict:
        tokens = [tok.decode([t]) for t in ids]
        offsets = [sum(len(t) for t in tokens[:k]) for k in range(len(tokens))]
        tops = [None] + [{tok.decode([w]): v for w, v in list(d.items())[:max(top, 1)]} for _, d in found[1:]]
        return {"tokens": tokens, "token_logprobs": [lp for lp, _ in found], "top_logprobs": tops, "text_offset": offsets}

    async def tokenize(request):
        body = await body_of(request)
        special = bool(body.get("add_special_tokens", "messages" not in body))
        if "messages" in body:
            ids = encode(tok, conversation(body["messages"]))
        elif isinstance(body.get("prompt"), str):
            ids = tok(body["prompt"], add_special_tokens=special)["input_ids"]
        else:
            raise BadRequest("give prompt (a string) or messages")
        return {"count": len(ids), "max_model_len": getattr(backend._hf.config, "max_position_embeddings", None), "tokens": ids}

    async def models(request):
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "caikit"}]}

    async def health(request):
        return {"status": "ok"}

    def route(path, handler, methods):
        return logged(path, handler, methods, api_key)

    app = Starlette(routes=[route("/v1/models", models, ["GET"]), route("/v1/chat/completions", chat, ["POST"]),
                            route("/v1/completions", completions, ["POST"]), route("/tokenize", tokenize, ["POST"]),
                            route("/health", health, ["GET"])])
    app.state.batcher = batcher
    return app


class Running:
    """`with Running(app, port=0) as url:` serves `app` on 127.0.0.1 in a thread (tests, notebooks)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/v1"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        return False
