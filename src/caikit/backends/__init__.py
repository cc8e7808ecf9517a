"""The generation backend protocol every stage uses, and the registry of backends.

A prompt is either a chat conversation (a list of `{"role", "content"}` dicts, rendered with the
model's chat template; a final assistant message is continued, not closed) or a plain string used
verbatim. A backend does two things:

- `generate(prompts, params) -> list[str]`: `params.n` samples per prompt, flat and prompt-major
  (`out[i * n + j]` is sample j of prompt i). Stages call it once per batch of records and write the
  results as each call returns.
- `score_choices(prompts, choices) -> list[list[float]]`: the summed log-probability of each choice
  continuation (e.g. " (A)" and " (B)") after each prompt, by prefill only. `choices` is one list
  shared by every prompt or one list per prompt.

Stages receive a backend; they never build one. `build(...)` is for the CLI; it reads model specs
(`ModelSpec`), so each model role of a stage may use its own backend and server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from caikit.backends.protocol import Backend, Message, Prompt, SamplingParams, encode, render  # noqa: F401
from caikit.errors import CaikitError


def _transformers(model, *, vllm_memory=None, **options):
    from caikit.backends.hf import TransformersBackend

    return TransformersBackend.load(model, **_local(options))


def _vllm(model, **options):
    from caikit.backends.vllm_backend import VllmBackend

    return VllmBackend.load(model, **_local(options))


def _openai(model, *, url=None, endpoint: dict | None = None, batch_size: int = 16, chat_template=None, **_):  # (dtype, device, vllm_memory: the server's)
    from caikit.backends.openai_backend import SCORING, Endpoint, OpenAIBackend

    settings = {k: v for k, v in (endpoint or {}).items() if v is not None}
    url = url or settings.pop("base_url", None) or os.environ.get("OPENAI_BASE_URL")
    settings.pop("base_url", None)
    if not url:
        raise CaikitError(f"--model {model}: no server given; write openai:{model}@URL, or pass --base-url or set OPENAI_BASE_URL")
    if settings.get("scoring", "auto") not in SCORING:
        raise CaikitError(f"model option scoring={settings['scoring']}: choose {', '.join(SCORING)}")
    return OpenAIBackend.load(model, Endpoint(url, **settings), batch_size=batch_size, chat_template=chat_template)


def _local(options: dict) -> dict:
    return {k: v for k, v in options.items() if k not in ("url", "endpoint")}


BACKENDS = {"transformers": _transformers, "vllm": _vllm, "openai": _openai}
# per-model options after `?` in an openai spec, and their types
SPEC_OPTIONS = {"tokenizer": str, "api_key_env": str, "concurrency": int, "timeout": float, "retries": int,
                "backoff": float, "scoring": str}


@dataclass(frozen=True)
class ModelSpec:
    """A model spec: `[BACKEND:]MODEL[@URL][?KEY=VALUE&...]`.

    `smollm2-135m-instruct`, `./out/sft`, `vllm:Qwen/Qwen2.5-7B-Instruct`,
    `openai:Qwen/Qwen2.5-7B-Instruct@http://gpu01:8000/v1`,
    `openai:llama3.1:8b@http://localhost:11434/v1?scoring=top-logprobs`. Without a prefix the
    command's --backend applies; `@URL` and the options are for the openai backend.
    """

    backend: str
    model: str
    url: str | None = None
    options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str, default_backend: str = "transformers") -> "ModelSpec":
        prefix, sep, rest = spec.partition(":")
        backend, model = (prefix, rest) if sep and prefix in BACKENDS else (default_backend, spec)
        if backend != "openai":
            return cls(backend, model)
        model, _, query = model.partition("?") if "@" not in model else (model, "", "")
        model, _, url = model.partition("@")
        url, _, query = url.partition("?") if url else (url, "", query)
        options = {}
        for item in filter(None, query.split("&")):
            key, eq, value = item.partition("=")
            key = key.replace("-", "_")
            if not eq or key not in SPEC_OPTIONS:
                raise CaikitError(f"--model {spec}: unknown option {item!r}; options are {', '.join(SPEC_OPTIONS)}")
            try:
                options[key] = SPEC_OPTIONS[key](value)
            except ValueError:
                raise CaikitError(f"--model {spec}: {key}={value} is not a {SPEC_OPTIONS[key].__name__}") from None
        if not model:
            raise CaikitError(f"--model {spec}: no model name before the server URL")
        return cls(backend, model, url or None, options)


def build(name: str, model: str, **options) -> Backend:
    """Build a backend for model spec `model`; `name` is the backend used when the spec has no
    prefix. Options: dtype, device, batch_size, chat_template, vllm_memory (vLLM's share of GPU memory),
    endpoint (the openai backend's defaults: base_url, api_key_env, tokenizer, concurrency, timeout, retries)."""
    if name not in BACKENDS:
        raise CaikitError(f"--backend {name}: unknown backend; choose one of {', '.join(BACKENDS)}")
    spec = ModelSpec.parse(model, name)
    if spec.backend == "openai":
        endpoint = {**(options.pop("endpoint", None) or {}), **spec.options}
        return _openai(spec.model, url=spec.url, endpoint=endpoint, **options)
    return BACKENDS[spec.backend](spec.model, **options)


def for_scoring(backend: Backend) -> Backend:
    """Check now, before any output is written, that `backend` can score choices."""
    check = getattr(backend, "check_scoring", None)
    if check is not None:
        check()
    return backend
