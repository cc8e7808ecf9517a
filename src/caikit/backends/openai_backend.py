"""The openai backend: a model behind an OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp,
Ollama, `caikit serve`, hosted APIs), spoken to with httpx.

- `generate`: one chat completion per conversation (`/v1/chat/completions` with n, temperature,
  top_p, max_tokens, stop, seed; a final assistant message is continued with vLLM's
  `continue_final_message`), one completion per plain-text prompt; `concurrency` requests at a time.
- `score_choices`, by one of two methods, recorded in provenance as `scoring`:
  - `prompt-logprobs` (exact): the prompt is tokenized exactly as the transformers backend does
    (with the `tokenizer` given, or by the server's `/tokenize`, which applies the server's own chat
    template), the choice tokens appended, and `/v1/completions` with `echo` and `logprobs` returns
    the log-probability of every prompt token; a choice's score is the sum over its tokens.
  - `top-logprobs` (an approximation, for servers that only return the top log-probabilities of
    generated tokens, as hosted chat APIs do): the model answers greedily with `top_logprobs=20`; at
    the first answer token where a choice's distinguishing text (" (A)" vs " (B)": "A" vs "B") is
    among the top tokens, each choice scores that token's log-probability. A choice missing from the
    top 20 gets the smallest listed log-probability (an upper bound); if no position shows a choice,
    both get equal scores and the count of such prompts is logged.
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

from caikit.backends.protocol import Prompt, SamplingParams, choices_per_prompt, continues_assistant, cut_at_stop, encode
from caikit.errors import CaikitError

log = logging.getLogger(__name__)
SCORING = ("auto", "prompt-logprobs", "top-logprobs")
TOP_K = 20


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
        self.scoring: str | None = None  # decided by check_scoring()
        self.details = {"endpoint": endpoint.base_url}
        self._chat_template = chat_template
        self._tok = None
        self._unmatched = 0
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

    def _url(self, path: str) -> str:
        return (self._root if path == "/tokenize" else self.endpoint.base_url.rstrip("/")) + path

    def _post(self, path: str, body: dict, *, retries: int | None = None) -> dict:
        import httpx

        retries = self.endpoint.retries if retries is None else retries
        url = self._url(path)
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
        where = f"{self._url(path)}: HTTP {reply.status_code}"
        if reply.status_code in (401, 403):
            env = self.endpoint.api_key_env
            given = "is set" if env and os.environ.get(env) else "is not set"
            return CaikitError(f"{where}: the server refused the API key (${env} {given}; name another with --api-key-env)")
        return CaikitError(f"{where}: {_message(reply)}")

    def check_model(self) -> None:
        """Reach the server once and check it serves `model`: exit 2 with one line if not."""
        import httpx

        url = self._url("/models")
        try:
            reply = self._http.get(url, timeout=30.0)
        except httpx.TransportError as err:
            raise CaikitError(f"{url}: cannot reach the server ({type(err).__name__}); is it running?") from None
        if reply.status_code >= 400:
            raise self._refused("/models", reply)
        try:
            served = [m["id"] for m in reply.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise CaikitError(f"{url}: the reply is not an OpenAI model list; is this an OpenAI-compatible server?") from None
        if self.model not in served:
            raise CaikitError(f"{url}: the server has no model {self.model!r}; it serves {', '.join(served) or 'nothing'}")

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
            reply = self._post(path, {**body, "prompt": prompt})
            texts = _in_order(reply, lambda c: c["text"])
        else:
            path, body["messages"] = "/chat/completions", prompt
            if continues_assistant(prompt):
                body.update(continue_final_message=True, add_generation_prompt=False)
            reply = self._post(path, body)
            texts = _in_order(reply, lambda c: c["message"]["content"] or "")
        if len(texts) != params.n:
            raise ServerError(f"{self._url(path)}: asked for {params.n} samples, got {len(texts)}")
        self.generated_tokens += (reply.get("usage") or {}).get("completion_tokens") or 0
        self.prompt_tokens += (reply.get("usage") or {}).get("prompt_tokens") or 0
        return [cut_at_stop(t, params.stop)[0].strip() for t in texts]

    # -- scoring ----------------------------------------------------------------------------------

    def check_scoring(self) -> str:
        """Decide how choices are scored (once): exact prompt log-probs when the server gives them and
        the prompt can be tokenized, else top log-probs; exit 2 if the server offers neither."""
        if self.scoring:
            return self.scoring
        wanted = self.endpoint.scoring
        tried = []
        if wanted in ("auto", "prompt-logprobs"):
            try:
                ids = self._encode([{"role": "user", "content": "Hi"}])
                self._prompt_logprobs(ids + self._encode_text(" (A)"), retries=1)
                self.scoring = "prompt-logprobs"
            except CaikitError as err:
                tried.append(f"prompt log-probs: {err}")
        if self.scoring is None and wanted in ("auto", "top-logprobs"):
            try:
                self._top_logprobs([{"role": "user", "content": "Hi"}], retries=1)
                self.scoring = "top-logprobs"
            except CaikitError as err:
                tried.append(f"top log-probs: {err}")
        if self.scoring is None:
            raise CaikitError(f"{self.endpoint.base_url}: cannot score choices with this server ({'; '.join(tried)})")
        if self.scoring == "top-logprobs":
            log.warning("%s: scoring choices from top-%d log-probs of the answer (an approximation)", self.model, TOP_K)
        self.details["scoring"] = self.scoring
        return self.scoring

    def score_choices(self, prompts: Sequence[Prompt], choices) -> list[list[float]]:
        per_prompt = choices_per_prompt(prompts, choices)
        method = self._exact if self.check_scoring() == "prompt-logprobs" else self._approximate
        return self._map(lambda job: method(*job), list(zip(prompts, per_prompt)))

    def _exact(self, prompt: Prompt, choices: list[str]) -> list[float]:
        ids = self._encode(prompt)
        scores = []
        for choice in choices:  # one request per choice; servers with prefix caching prefill the prompt once
            extra = self._encode_text(choice)
            if not extra:
                raise ValueError("score_choices: a choice is empty after tokenization")
            logprobs = self._prompt_logprobs(ids + extra)
            scores.append(sum(logprobs[len(ids):]))
        return scores

    def _prompt_logprobs(self, ids: list[int], retries: int | None = None) -> list[float]:
        body = {"model": self.model, "prompt": ids, "echo": True, "logprobs": 1, "max_tokens": 0, "temperature": 0}
        reply = self._post("/completions", body, retries=retries)
        self.prompt_tokens += len(ids)
        try:
            values = reply["choices"][0]["logprobs"]["token_logprobs"][: len(ids)]
        except (KeyError, IndexError, TypeError):
            raise CaikitError(f"{self._url('/completions')}: echo with logprobs returned no prompt log-probabilities") from None
        if len(values) != len(ids) or any(v is None for v in values[1:]):
            raise CaikitError(f"{self._url('/completions')}: prompt log-probabilities do not cover the prompt's {len(ids)} tokens")
        return [0.0] + [float(v) for v in values[1:]]

    def _top_logprobs(self, prompt: Prompt, retries: int | None = None) -> list[dict[str, float]]:
        """Top log-probs of each greedy answer token, as [{token text: logprob}]."""
        body = {"model": self.model, "max_tokens": 8, "temperature": 0, "logprobs": True, "top_logprobs": TOP_K}
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        body["messages"] = prompt
        if continues_assistant(prompt):
            body.update(continue_final_message=True, add_generation_prompt=False)
        reply = self._post("/chat/completions", body, retries=retries)
        self.prompt_tokens += (reply.get("usage") or {}).get("prompt_tokens") or 0
        self.generated_tokens += (reply.get("usage") or {}).get("completion_tokens") or 0
        try:
            content = reply["choices"][0]["logprobs"]["content"]
            return [{t["token"]: float(t["logprob"]) for t in step["top_logprobs"]} for step in content]
        except (KeyError, IndexError, TypeError):
            raise CaikitError(f"{self._url('/chat/completions')}: the reply has no top_logprobs") from None

    def _approximate(self, prompt: Prompt, choices: list[str]) -> list[float]:
        keys = distinguishing(choices)
        for step in self._top_logprobs(prompt):
            found = [max((lp for tok, lp in step.items() if _shows(tok, key)), default=None) for key in keys]
            if any(v is not None for v in found):
                floor = min(step.values())
                return [v if v is not None else floor for v in found]
        self._unmatched += 1
        log.warning("%s: no choice among the top log-probs of the answer (%d prompts so far): scored equal", self.model, self._unmatched)
        return [0.0] * len(choices)

    # -- tokens -----------------------------------------------------------------------------------

    def _tokenizer(self):
        if self._tok is None and self.endpoint.tokenizer:
            from caikit import models

            self._tok = models.load_tokenizer(models.resolve(self.endpoint.tokenizer), self._chat_template)
        return self._tok

    def _encode(self, prompt: Prompt) -> list[int]:
        tok = self._tokenizer()
        if tok is not None:
            return encode(tok, prompt)
        if isinstance(prompt, str):
            return self._server_tokens({"prompt": prompt, "add_special_tokens": True})
        last = continues_assistant(prompt)
        return self._server_tokens({"messages": prompt, "add_generation_prompt": not last,
                                    "continue_final_message": last, "add_special_tokens": False})

    def _encode_text(self, text: str) -> list[int]:
        tok = self._tokenizer()
        if tok is not None:
            return tok(text, add_special_tokens=False)["input_ids"]
        return self._server_tokens({"prompt": text, "add_special_tokens": False})

    def _server_tokens(self, body: dict) -> list[int]:
        try:
            return list(self._post("/tokenize", {"model": self.model, **body}, retries=1)["tokens"])
        except (KeyError, TypeError):
            raise CaikitError(f"{self._url('/tokenize')}: the reply has no tokens") from None
        except CaikitError as err:
            raise CaikitError(f"cannot tokenize prompts: give the model's tokenizer (--tokenizer DIR or hub id) ({err})") from None


def distinguishing(choices: list[str]) -> list[str]:
    """What tells the choices apart: " (A)" and " (B)" -> "A" and "B"."""
    stripped = [c.strip() for c in choices]
    if len(stripped) < 2:
        return stripped
    head = len(os.path.commonprefix(stripped))
    tail = len(os.path.commonprefix([s[::-1] for s in stripped]))
    return [s[head : len(s) - tail] or s for s in stripped]


def _shows(token: str, key: str) -> bool:
    text = token.strip().strip("()[]").strip()
    return bool(text) and (text == key or (len(key) > 1 and key.startswith(text)))


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
