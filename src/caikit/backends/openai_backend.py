"""The openai backend: a model behind an OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp,
Ollama, `caikit serve`, hosted APIs), spoken to with httpx.

- `generate`: one chat completion per conversation (`/v1/chat/completions` with n, temperature,
  top_p, max_tokens, stop, seed; a final assistant message is continued with vLLM's
  `continue_final_message`), one completion per plain-text prompt; `concurrency` requests at a time.
- `score_choices`: exact prompt log-probs where the server gives them and they check out, else an
  approximation; caikit.backends.openai_scoring probes the server once and scores.
- Transient failures (429, 5xx, dropped connections, timeouts, malformed replies) are retried with
  exponential backoff and jitter, honouring `Retry-After`. When the retries run out the call raises
  `ServerError` (exit 1): the stage stops with its whole records kept in `.partial` for `--resume`.
  Refusals that retrying cannot fix (401, 404, 400) are `CaikitError` (exit 2).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from caikit.backends.openai_scoring import METHODS, Scoring, distinguishing  # noqa: F401  (distinguishing: for callers)
from caikit.backends.protocol import Prompt, SamplingParams, choices_per_prompt, continues_assistant, cut_at_stop, encode
from caikit.errors import CaikitError

log = logging.getLogger(__name__)
SCORING = METHODS


class ServerError(CaikitError):
    """The server kept failing after every retry: a runtime failure, resumable."""

    exit_code = 1


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach a server. The API key is read from the environment variable named by
    `api_key_env`; it is never taken on the command line, logged or recorded."""

    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    tokenizer: str | None = None
    concurrency: int = 8
    timeout: float = 300.0
    retries: int = 5
    backoff: float = 1.0  # first retry's wait in seconds; doubles each retry, with jitter
    scoring: str = "auto"


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, endpoint: Endpoint, *, batch_size: int = 16, chat_template: Path | None = None):
        import httpx

        self.model = model
        self.endpoint = endpoint
        self.batch_size = batch_size
        self.generated_tokens = 0
        self.prompt_tokens = 0
        self.details = {"endpoint": endpoint.base_url}
        self.owner: str | None = None  # who /v1/models says owns the model ("caikit" for caikit serve)
        self._chat_template = chat_template
        self._tok = None
        self._pieces: dict[tuple[str, bool], list[int]] = {}
        self._scoring = Scoring(self)
        headers = {}
        key = os.environ.get(endpoint.api_key_env) if endpoint.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=endpoint.concurrency, max_keepalive_connections=endpoint.concurrency)
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(endpoint.timeout, connect=10.0), limits=limits)
        self._root = endpoint.base_url.rstrip("/").removesuffix("/v1")
        self._pool = ThreadPoolExecutor(endpoint.concurrency)

    @classmethod
    def load(cls, model: str, endpoint: Endpoint, **options) -> "OpenAIBackend":
        backend = cls(model, endpoint, **options)
        backend.check_model()
        return backend

    # -- HTTP -------------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return (self._root if path == "/tokenize" else self.endpoint.base_url.rstrip("/")) + path

    def post(self, path: str, body: dict, *, retries: int | None = None) -> dict:
        import httpx

        retries = self.endpoint.retries if retries is None else retries
        url = self.url(path)
        for attempt in range(retries + 1):
            wait = None
            try:
                reply = self._http.post(url, json=body)
                if reply.status_code == 429 or reply.status_code >= 500:
                    problem = f"HTTP {reply.status_code} {_message(reply)}"
                    wait = _retry_after(reply.headers.get("retry-after"))
                elif reply.status_code >= 400:
                    raise self._refused(path, reply)
                else:
                    try:
                        return reply.json()
                    except ValueError:
                        problem = "the reply is not JSON"
            except httpx.TransportError as err:  # refused, dropped, timed out
                problem = f"{type(err).__name__} {err}".strip()
            if attempt == retries:
                break
            wait = wait if wait is not None else self.endpoint.backoff * 2**attempt * random.uniform(0.5, 1.0)
            log.warning("%s: %s; retry %d/%d in %.1f s", url, problem, attempt + 1, retries, wait)
            time.sleep(min(wait, 120.0))
        raise ServerError(f"{url}: {problem} (gave up after {retries + 1} tries; rerun with --resume to continue)")

    def _refused(self, path: str, reply) -> CaikitError:
        where = f"{self.url(path)}: HTTP {reply.status_code}"
        if reply.status_code in (401, 403):
            env = self.endpoint.api_key_env
            given = "is set" if env and os.environ.get(env) else "is not set"
            return CaikitError(f"{where}: the server refused the API key (${env} {given}; name another with --api-key-env)")
        return CaikitError(f"{where}: {_message(reply)}")

    def check_model(self) -> None:
        """Reach the server once and check it serves `model`: exit 2 with one line if not."""
        import httpx

        url = self.url("/models")
        try:
            reply = self._http.get(url, timeout=30.0)
        except httpx.TransportError as err:
            raise CaikitError(f"{url}: cannot reach the server ({type(err).__name__}); is it running?") from None
        if reply.status_code >= 400:
            raise self._refused("/models", reply)
        try:
            models = reply.json()["data"]
            served = [m["id"] for m in models]
        except (ValueError, KeyError, TypeError):
            raise CaikitError(f"{url}: the reply is not an OpenAI model list; is this an OpenAI-compatible server?") from None
        if self.model not in served:
            raise CaikitError(f"{url}: the server has no model {self.model!r}; it serves {', '.join(served) or 'nothing'}")
        self.owner = next(m.get("owned_by") for m in models if m["id"] == self.model)

    def _map(self, fn, items) -> list:
        return list(self._pool.map(fn, items))

    # -- generation -------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[str]:
        samples = self._map(lambda p: self._sample(p, params), prompts)
        return [text for group in samples for text in group]

    def _sample(self, prompt: Prompt, params: SamplingParams) -> list[str]:
        body = {"model": self.model, "n": params.n, "temperature": params.temperature, "top_p": params.top_p,
                "max_tokens": params.max_new_tokens, "seed": params.seed}
        if params.stop:
            body["stop"] = list(params.stop)
        if isinstance(prompt, str):
            path = "/completions"
            reply = self.post(path, {**body, "prompt": prompt})
            texts = _in_order(reply, lambda c: c["text"])
        else:
            path, body["messages"] = "/chat/completions", prompt
            if continues_assistant(prompt):
                body.update(continue_final_message=True, add_generation_prompt=False)
            reply = self.post(path, body)
            texts = _in_order(reply, lambda c: c["message"]["content"] or "")
        if len(texts) != params.n:
            raise ServerError(f"{self.url(path)}: asked for {params.n} samples, got {len(texts)}")
        self.generated_tokens += (reply.get("usage") or {}).get("completion_tokens") or 0
        self.prompt_tokens += (reply.get("usage") or {}).get("prompt_tokens") or 0
        return [cut_at_stop(t, params.stop)[0].strip() for t in texts]

    # -- scoring ----------------------------------------------------------------------------------

    @property
    def scoring(self) -> str | None:
        return self._scoring.method

    def check_scoring(self) -> str:
        """Decide how choices are scored (once); exit 2 if the server offers no way."""
        return self._scoring.decide()

    def score_choices(self, prompts: Sequence[Prompt], choices) -> list[list[float]]:
        return self._scoring.score_all(list(prompts), choices_per_prompt(prompts, choices))

    # -- tokens -----------------------------------------------------------------------------------

    def tokenizer(self):
        """The client-side tokenizer, if one was given."""
        if self._tok is None and self.endpoint.tokenizer:
            from caikit import models

            self._tok = models.load_tokenizer(models.resolve(self.endpoint.tokenizer), self._chat_template)
        return self._tok

    def encode(self, prompt: Prompt) -> list[int]:
        tok = self.tokenizer()
        if tok is not None:
            return encode(tok, prompt)
        if isinstance(prompt, str):
            return self._server_tokens({"prompt": prompt, "add_special_tokens": True})
        last = continues_assistant(prompt)
        try:
            return self._server_tokens({"messages": prompt, "add_generation_prompt": not last,
                                        "continue_final_message": last, "add_special_tokens": False})
        except CaikitError as err:
            if not (last and "add_generation_prompt" in str(err)):
                raise
        # SGLang 0.5 refuses continue_final_message unless add_generation_prompt is left out or true
        return self._server_tokens({"messages": prompt, "continue_final_message": True, "add_special_tokens": False})

    def encode_text(self, text: str, special: bool = False) -> list[int]:
        """Token ids of a piece of text (a choice: the same few, asked for again and again, are kept)."""
        if (text, special) in self._pieces:
            return self._pieces[text, special]
        tok = self.tokenizer()
        if tok is not None:
            ids = tok(text, add_special_tokens=special)["input_ids"]
        else:
            ids = self._server_tokens({"prompt": text, "add_special_tokens": special})
        if len(self._pieces) < 4096 and len(text) < 256:
            self._pieces[text, special] = ids
        return ids

    def decode(self, token: int) -> str | None:
        """A token's text, where a client-side tokenizer is at hand."""
        tok = self.tokenizer()
        return tok.decode([token]) if tok is not None else None

    def _server_tokens(self, body: dict) -> list[int]:
        try:
            return list(self.post("/tokenize", {"model": self.model, **body}, retries=1)["tokens"])
        except (KeyError, TypeError):
            raise CaikitError(f"{self.url('/tokenize')}: the reply has no tokens") from None
        except CaikitError as err:
            raise CaikitError(f"cannot tokenize prompts: give the model's tokenizer (--tokenizer DIR or hub id) ({err})") from None


def _in_order(reply: dict, text) -> list[str]:
    try:
        return [text(c) for c in sorted(reply["choices"], key=lambda c: c.get("index", 0))]
    except (KeyError, TypeError):
        raise ServerError(f"malformed reply: {json.dumps(reply)[:200]}") from None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _message(reply) -> str:
    try:
        error = reply.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    return " ".join(str(message or reply.text or reply.reason_phrase).split())[:300]
