"""`caikit serve`: one loaded model behind the OpenAI-compatible HTTP API that caikit's openai
backend speaks, so several pipeline processes (and machines) share it.

Routes: `GET /v1/models`, `POST /v1/chat/completions` (n, temperature, top_p, max_tokens, stop,
seed; `continue_final_message`), `POST /v1/completions` (text or token-id prompts, one or a list;
`echo` with `logprobs` and `max_tokens: 0` gives prompt log-probabilities, as vLLM does; SGLang's
`logprob_start_len` (one, or one per prompt) leaves those of earlier tokens null and uncomputed; `logprobs` with
`max_tokens: 1` and temperature 0 gives the likeliest next token and its rivals, or with vLLM's
`logprob_token_ids` the tokens asked for; `return_tokens_as_token_ids` as in vLLM),
`POST /tokenize` (vLLM's shape: `prompt` or `messages`), `GET /health`.

Echo requests are scored by the lean engine: rows sharing a beginning (one prompt with each of its
choices appended, one conversation asked in both option orders) have it prefilled once and its
log-probs computed once. Requests that arrive within a short window (`window` seconds) are run as one batch by a single
worker thread (caikit.serving.Batcher). Sampled rows have their own seeded generators (see
caikit.backends.hf), so a seeded request gets the same text whatever it is batched with, and the
same text as the in-process backend.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

from caikit.backends import SamplingParams, encode
from caikit.backends.hf import Row, TransformersBackend
from caikit.errors import CaikitError, FieldError
from caikit.inputs import ROLES
from caikit.serving import BadRequest, Batcher, json_body, logged


@dataclass
class Limits:
    max_tokens: int = 4096  # most new tokens per sample
    max_request_bytes: int = 8 * 2**20
    max_n: int = 16
    max_prompts: int = 64  # prompts in one completions request (--max-items)


def create_app(backend: TransformersBackend, *, name: str, api_key: str | None = None, window: float = 0.02,
               max_rows: int = 64, limits: Limits | None = None):
    """The ASGI app (Starlette) serving `backend` under the model id `name`."""
    from starlette.applications import Starlette

    server = Server(backend, name, limits or Limits(), window, max_rows)
    routes = [("/v1/models", server.models, "GET"), ("/v1/chat/completions", server.chat, "POST"),
              ("/v1/completions", server.completions, "POST"), ("/tokenize", server.tokenize, "POST"), ("/health", server.health, "GET")]
    app = Starlette(routes=[logged(path, handler, [method], api_key) for path, handler, method in routes])
    app.state.batcher = server.batcher
    return app


class Server:
    """The handlers of `caikit serve`'s routes, over one backend and one batcher."""

    def __init__(self, backend: TransformersBackend, name: str, limits: Limits, window: float, max_rows: int):
        self.backend, self.name, self.limits = backend, name, limits
        self.tok = backend.tokenizer
        runners = {"generate": lambda items, jobs: backend.generate_rows(items, details=True),
                   "logprobs": lambda items, jobs: backend.prompt_logprobs(
                       items, top=max(j.options["top"] for j in jobs), wanted=[s for j in jobs for s in j.options["starts"]]),
                   "next": lambda items, jobs: backend.next_logprobs(
                       items, top=max(j.options["top"] for j in jobs), extra=[j.options["ids"] for j in jobs for _ in j.items])}
        self.batcher = Batcher(runners, window, max_rows)

    # -- routes ------------------------------------------------------------------------------------

    async def chat(self, request) -> dict:
        body = await self.body_of(request)
        if body.get("logprobs") or body.get("stream"):
            raise BadRequest("caikit serve does not stream or return chat log-probabilities; "
                             "score with /v1/completions (echo, logprobs, max_tokens 0)")
        messages = conversation(body.get("messages"))
        params, n = self.sampling(body, 256)
        ids = encode(self.tok, messages)
        done = await self.generate([ids], params, n)
        choices = [{"index": j, "message": {"role": "assistant", "content": g.text}, "finish_reason": g.finish}
                   for j, g in enumerate(done)]
        return self.reply("chat.completion", choices, len(ids), sum(g.tokens for g in done))

    async def completions(self, request) -> dict:
        body = await self.body_of(request)
        if body.get("stream"):
            raise BadRequest("caikit serve does not stream")
        ids_list = self.prompts_of(body.get("prompt"))
        params, n = self.sampling(body, 16)
        max_tokens = body.get("max_tokens", 16)
        echo, top = bool(body.get("echo")), body.get("logprobs")
        if max_tokens == 0 and not echo:
            raise BadRequest("max_tokens 0 needs echo")
        if top is not None and not (isinstance(top, int) and not isinstance(top, bool) and 0 <= top <= 20):
            raise BadRequest("logprobs must be a whole number from 0 to 20")
        if top is not None and max_tokens != 0 and (max_tokens != 1 or echo or n != 1 or params.temperature != 0):
            raise BadRequest("caikit serve gives log-probabilities of prompt tokens (echo, max_tokens 0) "
                             "or of one greedy token (max_tokens 1, temperature 0, no echo)")
        start = body.get("logprob_start_len", 0)
        starts = start if isinstance(start, list) else [start] * len(ids_list)
        if len(starts) != len(ids_list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in starts):
            raise BadRequest("logprob_start_len must be a whole number of tokens, or one per prompt")
        prompt_tokens = sum(len(ids) for ids in ids_list)
        if max_tokens == 0:
            found = await self.batcher.run("logprobs", ids_list, top=max(top or 0, 1), starts=starts)
            choices = [{"index": i, "text": self.tok.decode(ids), "finish_reason": "length",
                        "logprobs": self.echoed(ids, f, top) if top is not None else None}
                       for i, (ids, f) in enumerate(zip(ids_list, found))]
            return self.reply("text_completion", choices, prompt_tokens, 0)
        if top is not None:  # the likeliest next token and its `top` rivals
            wanted, as_ids = body.get("logprob_token_ids") or [], bool(body.get("return_tokens_as_token_ids"))
            if not isinstance(wanted, list) or len(wanted) > 128 or not all(isinstance(t, int) and 0 <= t < len(self.tok) for t in wanted):
                raise BadRequest("logprob_token_ids must be a list of up to 128 valid token ids")
            found = await self.batcher.run("next", ids_list, top=max(top, 1), ids=wanted)
            choices = [{"index": i, "text": self.tok.decode([next(iter(f))]), "finish_reason": "length",
                        "logprobs": self.following(ids, f, top, wanted, as_ids)} for i, (ids, f) in enumerate(zip(ids_list, found))]
            return self.reply("text_completion", choices, prompt_tokens, len(ids_list))
        done = await self.generate(ids_list, params, n)
        choices = [{"index": k, "text": (self.tok.decode(ids_list[k // n]) if echo else "") + g.text, "finish_reason": g.finish,
                    "logprobs": None} for k, g in enumerate(done)]
        return self.reply("text_completion", choices, prompt_tokens, sum(g.tokens for g in done))

    async def tokenize(self, request) -> dict:
        body = await self.body_of(request)
        special = bool(body.get("add_special_tokens", "messages" not in body))
        if "messages" in body:
            ids = encode(self.tok, conversation(body["messages"]))
        elif isinstance(body.get("prompt"), str):
            ids = self.tok(body["prompt"], add_special_tokens=special)["input_ids"]
        else:
            raise BadRequest("give prompt (a string) or messages")
        return {"count": len(ids), "max_model_len": self.backend.max_length, "tokens": ids}

    async def models(self, request) -> dict:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "caikit"}]}

    async def health(self, request) -> dict:
        return {"status": "ok"}

    # -- what the routes share ---------------------------------------------------------------------

    async def body_of(self, request) -> dict:
        body = await json_body(request, self.limits.max_request_bytes)
        if body.get("model", self.name) != self.name:
            raise BadRequest(f"no model {body.get('model')!r}; this server has {self.name!r}", 404)
        return body

    def sampling(self, body: dict, default_max: int) -> tuple[SamplingParams, int]:
        limits = self.limits
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

    def prompts_of(self, prompt) -> list[list[int]]:
        if isinstance(prompt, str):
            prompt = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompt = [prompt]
        if not isinstance(prompt, list) or not prompt or len(prompt) > self.limits.max_prompts:
            raise BadRequest(f"prompt must be a string, a list of token ids, or a list of up to {self.limits.max_prompts} of them")
        out = []
        for p in prompt:
            if isinstance(p, str):
                out.append(self.tok(p)["input_ids"])
            elif isinstance(p, list) and p and all(isinstance(t, int) and 0 <= t < len(self.tok) for t in p):
                out.append(p)
            else:
                raise BadRequest("each prompt must be a non-empty string or a list of valid token ids")
        return out

    async def generate(self, ids_list: list[list[int]], params: SamplingParams, n: int):
        return await self.batcher.run("generate", [Row(ids, params, j) for ids in ids_list for j in range(n)])

    def echoed(self, ids: list[int], found: list, top: int) -> dict:
        tokens = [self.tok.decode([t]) for t in ids]
        offsets = [sum(len(t) for t in tokens[:k]) for k in range(len(tokens))]
        tops = [None if d is None else {self.tok.decode([w]): v for w, v in list(d.items())[:max(top, 1)]} for _, d in found]
        return {"tokens": tokens, "token_logprobs": [lp for lp, _ in found], "top_logprobs": tops, "text_offset": offsets}

    def following(self, ids: list[int], found: dict, top: int, wanted: list[int], as_ids: bool) -> dict:
        """The logprobs of a one-token answer, as vLLM gives them: with `wanted` (vLLM's
        logprob_token_ids), those tokens' and the answer's in place of the top ones; `as_ids`
        names tokens "token_id:N" (its return_tokens_as_token_ids)."""
        name = (lambda t: f"token_id:{t}") if as_ids else (lambda t: self.tok.decode([t]))
        (token, logprob), = list(found.items())[:1]
        shown = [token, *wanted] if wanted else list(found)[:max(top, 1)]
        return {"tokens": [name(token)], "token_logprobs": [logprob], "top_logprobs": [{name(t): found[t] for t in shown}],
                "text_offset": [len(self.tok.decode(ids))]}

    def reply(self, kind: str, choices: list, prompt_tokens: int, completion_tokens: int) -> dict:
        return {"id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex[:24]}", "object": kind,
                "created": int(time.time()), "model": self.name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}


def conversation(messages) -> list:
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise BadRequest("messages must be a non-empty list of {role, content} with string content")
    if unknown := sorted({m["role"] for m in messages} - set(ROLES)):
        raise BadRequest(f"unknown role {unknown[0]!r}: roles are {', '.join(ROLES)}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]
