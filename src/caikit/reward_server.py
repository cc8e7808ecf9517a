"""`caikit serve-reward`: caikit's rewards (a preference model or the constitutional feedback model,
see caikit.rewards) over HTTP, for RL engines that run on clusters.

- `POST /get_reward`, OpenRLHF's remote reward model (`--reward.remote_url http://HOST:PORT/get_reward`
  since OpenRLHF 0.10.2; `--remote_rm_url` before): the body is `{"query": [...], "prompts": [...],
  "labels": [...]}` as OpenRLHF sends it (0.11: `openrlhf/utils/agent.py`, one sample per request;
  queries: rendered prompt + response; prompts: the rendered prompts; labels: the dataset's label
  column, used as reference answers in `vs-reference` mode); the reply is `{"rewards": [...],
  "scores": [...], "extra_logs": {...}}` (OpenRLHF reads `rewards`; `scores`, in [0, 1], feed its
  dynamic filtering). OpenRLHF only info-logs a failed reply, and the sample gets no reward, so
  every failed request is logged here at warning with its reason and counted in `GET /health`.
- `POST /v1/score`, `{"prompts": [conversation or text], "responses": [...], "references": [...]}`
  -> `{"rewards": [...], "scores": [...]}`: what caikit.integrations.verl calls.
- `GET /health`: the reward's kind, and the requests served and failed (by status, with the last
  failure's reason).

Rendered texts are read back into conversations: ChatML (`<|im_start|>role ...`), Llama 3
(`<|start_header_id|>role<|end_header_id|>`) and `Human:`/`Assistant:` transcripts are recognised;
any other text is one user turn. Concurrent requests are gathered into one batch.
"""

from __future__ import annotations

import math
import re

from caikit.inputs import ROLES, looks_like_transcript, parse_transcript, split_transcript
from caikit.rewards import Scorer
from caikit.serving import BadRequest, Batcher, Failures, json_body, logged

_MARKUP = [
    re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)(?=<\|im_end\|>|<\|im_start\|>|\Z)", re.S),
    re.compile(r"<\|start_header_id\|>(system|user|assistant)<\|end_header_id\|>\n\n(.*?)(?=<\|eot_id\|>|<\|start_header_id\|>|\Z)", re.S),
]
_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]+\|>|</?s>")


def clean(text: str) -> str:
    """Text without chat-template special tokens (end-of-turn, padding, begin-of-text)."""
    return _SPECIAL.sub("", text).strip()


def conversation_of(text: str) -> list[dict]:
    """A rendered conversation read back into messages (a final empty assistant turn dropped)."""
    for pattern in _MARKUP:
        turns = [{"role": role, "content": clean(content)} for role, content in pattern.findall(text)]
        if turns:
            while turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
                turns.pop()
            return turns
    if looks_like_transcript(text):
        if text.rstrip().endswith("Assistant:"):  # a prompt awaiting its answer
            turns = parse_transcript(text, keep_history=True)
            if turns:
                return turns
        elif split := split_transcript(text):
            return split[0] + [{"role": "assistant", "content": split[1]}]
    return [{"role": "user", "content": clean(text)}]


def from_query(query: str, prompt: str | None) -> tuple[list[dict], str]:
    """(prompt conversation, response) from OpenRLHF's rendered query and, when sent, its prompt."""
    if prompt and query.startswith(prompt):
        return conversation_of(prompt), clean(query[len(prompt):])
    turns = conversation_of(query)
    if len(turns) > 1 and turns[-1]["role"] == "assistant":
        return turns[:-1], turns[-1]["content"]
    raise BadRequest("cannot tell the response from the prompt in a query; send `prompts` with the queries")


def create_app(scorer: Scorer, *, api_key: str | None = None, window: float = 0.02, max_rows: int = 64,
               max_request_bytes: int = 32 * 2**20, max_items: int = 1024):
    """The ASGI app serving `scorer`; a request holds at most `max_items` responses (a larger one would
    hold the batcher, and every other client, for as long as it takes to score)."""
    from starlette.applications import Starlette

    def run(items, jobs):
        references = [r for _, _, r in items]
        return scorer.score([p for p, _, _ in items], [t for _, t, _ in items], None if all(r is None for r in references) else references)

    batcher = Batcher({"score": run}, window, max_rows)
    failures = Failures()
    needs_reference = scorer.kind == "constitutional" and scorer.settings.mode == "vs-reference"

    async def score(items: list) -> dict:
        if needs_reference and any(r is None or r == "" for _, _, r in items):
            raise BadRequest("this server rewards against reference answers (vs-reference): send one per response")
        rewards = [float(r) for r in await batcher.run("score", items)] if items else []
        scores = [1 / (1 + math.exp(-r)) for r in rewards] if scorer.kind == "pm" else rewards
        return {"rewards": rewards, "scores": scores}

    def strings(body: dict, key: str, n: int | None, required: bool = True) -> list | None:
        value = body.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, list) or (n is not None and len(value) != n):
            raise BadRequest(f"`{key}` must be a list" + (f" of {n} items, one per query" if n is not None else ""))
        if len(value) > max_items:
            raise BadRequest(f"`{key}` has {len(value)} items; this server takes at most {max_items} per request (--max-items)", 413)
        return value

    async def get_reward(request):
        body = await json_body(request, max_request_bytes)
        queries = strings(body, "query", None)
        if not all(isinstance(q, str) for q in queries):
            raise BadRequest("`query` must be a list of strings")
        prompts = strings(body, "prompts", len(queries), required=False) or [None] * len(queries)
        labels = strings(body, "labels", len(queries), required=False) or [None] * len(queries)
        items = []
        for query, prompt, label in zip(queries, prompts, labels):
            conversation, response = from_query(query, prompt if isinstance(prompt, str) else None)
            items.append((conversation, response, label if isinstance(label, str) and label else None))
        result = await score(items)
        return {**result, "extra_logs": {f"caikit_{scorer.kind}": result["rewards"]}}

    async def v1_score(request):
        body = await json_body(request, max_request_bytes)
        responses = strings(body, "responses", None)
        prompts = strings(body, "prompts", len(responses))
        references = strings(body, "references", len(responses), required=False) or [None] * len(responses)
        for p, r in zip(prompts, responses):
            if not isinstance(r, str) or not (isinstance(p, str) or (isinstance(p, list) and all(
                    isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in p))):
                raise BadRequest(f"each prompt must be a string or a list of {{role, content}} (roles: {', '.join(ROLES)}); "
                                 "each response a string")
        return await score([(p, r, ref) for p, r, ref in zip(prompts, responses, references)])

    async def health(request):
        return {"status": "ok", "reward": scorer.kind, **failures.report()}

    app = Starlette(routes=[logged("/get_reward", get_reward, ["POST"], api_key, failures),
                            logged("/v1/score", v1_score, ["POST"], api_key, failures), logged("/health", health, ["GET"], None)])
    app.state.batcher = batcher
    return app
