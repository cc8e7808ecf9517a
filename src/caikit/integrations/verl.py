"""verl's custom reward function, backed by `caikit serve-reward`.

In verl's config (the server's URL in `$CAIKIT_REWARD_URL`, e.g. http://127.0.0.1:8001; a key, if the
server asks for one, in `$CAIKIT_REWARD_KEY`), verl 0.7.1 and later (read against 0.9.1):

    reward.custom_reward_function.path=<site-packages>/caikit/integrations/verl.py
    reward.custom_reward_function.name=compute_score_async     # or compute_score
    reward.reward_manager.name=naive

verl's reward-loop managers (`naive`, `dapo`, ...) call the function once per sample: they await a
coroutine function (`compute_score_async`, so many samples are in flight to the server, whose batcher
gathers them into batches) and run a plain one (`compute_score`) in a thread pool. Since verl 0.9.0
the old top-level spelling `custom_reward_function.path=...` is accepted by Hydra and then ignored
(verl falls back to its default scorer); write the `reward.` keys above. `compute_score_batch` is for
verl 0.6 and older only (`reward_model.reward_manager=batch`): from 0.7.1 the trainer looks managers
up in its reward-loop registry, which has no `batch`.

verl passes the decoded response (`solution_str`), the dataset's `reward_model.ground_truth` and its
`extra_info`, but not the prompt: put the prompt in `extra_info["prompt"]` (a string or a list of
{role, content}) when preparing the parquet files (`question` and `raw_prompt` are read too), or use
caikit's reward manager (caikit/integrations/verl_manager.py), which reads verl's own `raw_prompt`.
The ground truth is sent as the reference answer, which a `vs-reference` server compares against.
"""

from __future__ import annotations

import asyncio
import os
import time

PROMPT_KEYS = ("prompt", "question", "raw_prompt")
TRIES = 5


def _prompt(extra_info) -> str | list:
    for key in PROMPT_KEYS:
        value = (extra_info or {}).get(key)
        if value is not None and len(value):
            return value if isinstance(value, str) else [dict(m) for m in value]
    raise ValueError(f"caikit reward: extra_info has no prompt; add one of {', '.join(PROMPT_KEYS)} to the data's extra_info")


def _request(prompts: list, responses: list[str], references: list) -> tuple[str, dict, dict]:
    """The URL, body and headers of one /v1/score request."""
    url = os.environ.get("CAIKIT_REWARD_URL")
    if not url:
        raise ValueError("caikit reward: set $CAIKIT_REWARD_URL to the caikit serve-reward server (http://HOST:PORT)")
    headers = {"Authorization": f"Bearer {os.environ['CAIKIT_REWARD_KEY']}"} if os.environ.get("CAIKIT_REWARD_KEY") else {}
    body = {"prompts": prompts, "responses": responses, "references": [r if isinstance(r, str) else None for r in references]}
    return url.rstrip("/") + "/v1/score", body, headers


def _rewards(reply) -> list[float] | None:
    """The rewards of a reply; None for a 5xx, which is worth another try (a 4xx raises)."""
    if reply.status_code >= 500:
        return None
    reply.raise_for_status()
    return reply.json()["rewards"]


def _post(prompts: list, responses: list[str], references: list, tries: int = TRIES) -> list[float]:
    """Rewards from the server, blocking; 5xx replies and dropped connections tried again."""
    import httpx

    url, body, headers = _request(prompts, responses, references)
    for attempt in range(tries):
        try:
            reply = httpx.post(url, json=body, headers=headers, timeout=600)
            if (found := _rewards(reply)) is not None:
                return found
        except httpx.TransportError:
            if attempt == tries - 1:
                raise
        if attempt < tries - 1:  # (no wait after the last try)
            time.sleep(2**attempt)
    raise RuntimeError(f"caikit reward: {url} kept failing (HTTP {reply.status_code})")


async def score_async(prompts: list, responses: list[str], references: list, tries: int = TRIES) -> list[float]:
    """Rewards from the server, as a coroutine; 5xx replies and dropped connections tried again."""
    import httpx

    url, body, headers = _request(prompts, responses, references)
    async with httpx.AsyncClient(timeout=600) as client:
        for attempt in range(tries):
            try:
                reply = await client.post(url, json=body, headers=headers)
                if (found := _rewards(reply)) is not None:
                    return found
            except httpx.TransportError:
                if attempt == tries - 1:
                    raise
            if attempt < tries - 1:
                await asyncio.sleep(2**attempt)
    raise RuntimeError(f"caikit reward: {url} kept failing (HTTP {reply.status_code})")


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """One sample, as verl's reward managers call it (keyword arguments); blocking."""
    return _post([_prompt(extra_info)], [solution_str], [ground_truth])[0]


async def compute_score_async(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """One sample, as a coroutine: verl's reward-loop managers await it, many samples at once."""
    return (await score_async([_prompt(extra_info)], [solution_str], [ground_truth]))[0]


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos, **kwargs) -> list[float]:
    """A batch, as verl 0.6 and older's BatchRewardManager calls it (keyword arguments)."""
    return _post([_prompt(e) for e in extra_infos], list(solution_strs), list(ground_truths))
