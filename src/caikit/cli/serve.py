"""`caikit serve`: share one loaded model over the OpenAI-compatible HTTP API; `caikit serve-reward`:
caikit's rewards over HTTP for OpenRLHF and verl."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from caikit.cli.app import command
from caikit.cli.options import (
    AllowPickle, Backend, BatchSize, ChatTemplate, Constitution, Device, Dtype, FeedbackMode, FeedbackModel, Host, MaxBatch, MaxItems, Model, PmDir,
    Port, PrinciplesPerLabel, Quiet, Seed, ServerKey, VllmMemory, WindowMs,
)
from caikit.errors import CaikitError


@command()
def serve(
    model: Model = "smollm2-135m-instruct",
    host: Host = "127.0.0.1",
    port: Port = 8000,
    api_key_env: ServerKey = None,
    served_name: Annotated[Optional[str], typer.Option("--served-name", help="Model id clients ask for (default: the --model spec).")] = None,
    window_ms: WindowMs = 20.0,
    max_batch: MaxBatch = 64,
    max_items: MaxItems = 64,
    max_tokens: Annotated[int, typer.Option("--max-tokens-limit", min=1, help="Most new tokens a request may ask for.")] = 4096,
    max_request_mb: Annotated[float, typer.Option("--max-request-mb", min=0.001, help="Largest request body accepted.")] = 8.0,
    dtype: Dtype = "auto",
    device: Device = "auto",
    batch_size: BatchSize = 16,
    chat_template: ChatTemplate = None,
    allow_pickle: AllowPickle = False,
    quiet: Quiet = False,
):
    """Serve a model with an OpenAI-compatible API (/v1/models, /v1/chat/completions,
    /v1/completions with echo + logprobs, /tokenize), batching concurrent requests, so several
    pipeline processes share one loaded feedback model. Finished generations are kept (up to 1 GiB),
    so a conversation's next turn is not prefilled again. Logs one line per request on stderr.

    Example: caikit serve --model smollm2-135m-instruct --port 8000 &
             caikit label -i pairs.jsonl --feedback-model openai:smollm2-135m-instruct@http://127.0.0.1:8000/v1
    """
    from caikit import console, serve as stage, serving
    from caikit.backends import ModelSpec
    from caikit.backends.hf import TransformersBackend

    console.setup_logging(quiet)
    if ModelSpec.parse(model).backend != "transformers":
        raise CaikitError(f"--model {model}: caikit serve runs models with transformers; a vLLM model has its own server (vllm serve)")
    key = required_key(api_key_env)
    listener = serving.bind(host, port)  # before loading the model: a taken port fails at once
    backend = TransformersBackend.load(model, dtype=dtype, device=device, batch_size=batch_size, chat_template=chat_template)
    backend.keep_prefixes()
    limits = stage.Limits(max_tokens=max_tokens, max_request_bytes=int(max_request_mb * 2**20), max_prompts=max_items)
    name = served_name or model
    app = stage.create_app(backend, name=name, api_key=key, window=window_ms / 1000, max_rows=max_batch, limits=limits)
    port = listener.getsockname()[1]
    console.say(f"caikit serve: {name} on http://{host}:{port}/v1 ({'API key required' if key else 'no API key'})")
    serving.serve_forever(app, listener)


@command("serve-reward")
def serve_reward(
    pm: PmDir = None,
    feedback_model: FeedbackModel = "smollm2-135m-instruct",
    constitution: Constitution = "default",
    feedback_mode: FeedbackMode = "absolute",
    principles_per_label: PrinciplesPerLabel = 1,
    config: Annotated[Optional[Path], typer.Option("--config", help="The reward settings as TOML (see caikit.rewards), instead of the flags.")] = None,
    host: Host = "127.0.0.1",
    port: Port = 8001,
    api_key_env: ServerKey = None,
    window_ms: WindowMs = 20.0,
    max_batch: MaxBatch = 256,
    max_items: MaxItems = 1024,
    backend: Backend = "transformers",
    dtype: Dtype = "auto",
    device: Device = "auto",
    batch_size: BatchSize = 16,
    vllm_memory: VllmMemory = None,
    seed: Seed = 0,
    allow_pickle: AllowPickle = False,
    quiet: Quiet = False,
):
    """Serve caikit's reward over HTTP for OpenRLHF (POST /get_reward, its --reward.remote_url) and verl
    (caikit.integrations.verl, POST /v1/score): a preference model (--pm), or else the constitutional
    feedback model (--feedback-model) judging each response. Logs one line per request on stderr.

    Example: caikit serve-reward --pm runs/pm --port 8001
             (OpenRLHF >= 0.10.2) --reward.remote_url http://127.0.0.1:8001/get_reward
    A failed request is logged at warning with its reason and counted in GET /health (OpenRLHF
    only info-logs it, and that sample gets no reward).
    """
    from caikit import console, reward_server, rewards, serving

    console.setup_logging(quiet)
    settings = reward_settings(config, pm=str(pm) if pm else None, feedback_model=feedback_model, constitution=constitution,
                               mode=feedback_mode, principles=principles_per_label, seed=seed, backend=backend,
                               device=device, dtype=dtype, batch_size=batch_size, vllm_memory=vllm_memory)
    key = required_key(api_key_env)
    listener = serving.bind(host, port)
    scorer = rewards.Scorer(settings)
    described = scorer.describe()  # loads the model now, not on the first request
    app = reward_server.create_app(scorer, api_key=key, window=window_ms / 1000, max_rows=max_batch, max_items=max_items)
    console.say(f"caikit serve-reward: {described['kind']} reward on http://{host}:{listener.getsockname()[1]} "
                f"(/get_reward, /v1/score; {'API key required' if key else 'no API key'})")
    serving.serve_forever(app, listener)


def reward_settings(config: Path | None, **flags):
    """The served reward's settings: the TOML file of --config, else the flags. Group rewards need the
    completions of a prompt together, and OpenRLHF and verl send one sample per request."""
    from caikit import rewards

    settings = rewards.Settings.read(config) if config is not None else rewards.Settings(**flags)
    if settings.mode == "group":
        where = f"{config}: mode" if config is not None else "--feedback-mode"
        raise CaikitError(f"{where} group: OpenRLHF and verl send one sample per request, so there is no group to compare "
                          "(use it with caikit rlaif or caikit.rewards in TRL)")
    return settings


def required_key(api_key_env: str | None) -> str | None:
    if not api_key_env:
        return None
    key = os.environ.get(api_key_env)
    if not key:
        raise CaikitError(f"--api-key-env {api_key_env}: the variable is not set")
    return key
