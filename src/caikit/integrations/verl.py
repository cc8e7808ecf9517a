"""verl's custom reward function, backed by `caikit serve-reward`.

In verl's config (the server's URL in `$CAIKIT_REWARD_URL`, e.g. http://127.0.0.1:8001):

    custom_reward_function.path=<site-packages>/caikit/integrations/verl.py
    custom_reward_function.name=compute_score          # reward_model.reward_manager=naive (one call per sample)
    custom_reward_function.name=compute_score_batch    # reward_model.reward_manager=batch (one call per batch)

verl passes the decoded response (`solution_str`), the dataset's `reward_model.ground_truth` and its
`extra_info`, but not the prompt: put the prompt in `extra_info["prompt"]` (a string or a list of
{role, content}) when preparing the parquet files (`question` and `raw_prompt` are read too). The
ground truth is sent as the reference answer, which a `vs-reference` server compares against.
"""

from __future__ import annotations

import os
import time

PROMPT_KEYS = ("prompt", "question", "raw_prompt")


def _prompt(extra_info) -> str | list:
    for key in PROMPT_KEYS:
        value = (extra_info or {}).get(key)
        if value is not None and len(value):
            return value if isinstance(value, str) else [dict(m) for m in value]
    raise ValueError(f"caikit reward: extra_info has no prompt; add one of {', '.join(PROMPT_KEYS)} to the data's extra_info")


def _post(prompts: list, responses: list[str], references: list, tries: int = 5) -> list[float]:
    import httpx

    url = os.environ.get("CAIKIT_REWARD_URL")
    if not url:
        raise ValueError("caikit reward: set $CAIKIT_REWARD_URL to the caikit serve-reward server (http://HOST:PORT)")
    headers = {"Authorization": f"Bearer {os.environ['CAIKIT_REWARD_KEY']}"} if os.environ.get("CAIKIT_REWARD_KEY") else {}
    body = {"prompts": prompts, "responses": responses, "references": [r if isinstance(r, str) else None for r in references]}
    for attempt in range(tries):
        try:
            reply = httpx.post(url.rstrip("/") + "/v1/score", json=body, headers=headers, timeout=600)
            if reply.status_code < 500:
                reply.raise_for_status()
                return reply.json()["rewards"]
        except httpx.TransportError:
            if attempt == tries - 1:
                raise
        if attempt < tries - 1:  # (no wait after the last try)
            time.sleep(2**attempt)
    raise RuntimeError(f"caikit reward: {url} kept failing (HTTP {reply.status_code})")


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """One sample, as verl's NaiveRewardManager calls it (keyword arguments)."""
    return _post([_prompt(extra_info)], [solution_str], [ground_truth])[0]


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos, **kwargs) -> list[float]:
    """A batch, as verl's BatchRewardManager calls it (keyword arguments)."""
    return _post([_prompt(e) for e in extra_infos], list(solution_strs), list(ground_truths))
