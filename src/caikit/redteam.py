"""`caikit redteam`: answer red-team prompts with the initial model, or write new ones few-shot.

- `answer`: one completion per prompt from the helpful-only model, in TRL's conversational
  prompt-completion format. These are the responses that `revise` critiques.
- `synthesize`: new red-team prompts written by the model from few-shot examples of the input
  prompts (the paper grew 42k human-written prompts with 140k model-written ones). Each few-shot
  prompt is a plain-text bullet list of randomly drawn examples that the model continues by one
  line; the line is cleaned, checked and deduplicated against the inputs and earlier outputs.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from typing import Callable, Iterable, Iterator

from caikit.backends import Backend, SamplingParams
from caikit.errors import CaikitError
from caikit.records import batches, prompt_id, provenance

Progress = Callable[[int], None]


def check(*, synthesize: int, shots: int, sharded: bool) -> None:
    """Usage errors of the redteam settings, before anything is read or loaded."""
    if synthesize and shots < 1:
        raise CaikitError(f"--shots {shots}: --synthesize needs at least one example per prompt")
    if synthesize and sharded:
        raise CaikitError("--shard does not split --synthesize; give each worker its own --seed instead")


def by_length(records: list[dict]) -> list[dict]:
    """Longest prompts first, so each batch holds prompts of similar length (less padding)."""
    return sorted(records, key=lambda r: -sum(len(m["content"]) for m in r["prompt"]))


def answer(
    records: Iterable[dict], backend: Backend, params: SamplingParams, advance: Progress = lambda n: None, window: int = 32
) -> Iterator[dict]:
    """Yield each record with the model's `completion`, one batch at a time: records are read
    `window` batches at a time, longest prompts first within each window."""
    for chunk in batches(records, backend.batch_size * window):
        ordered = by_length(chunk)
        for start in range(0, len(ordered), backend.batch_size):
            batch = ordered[start : start + backend.batch_size]
            texts = backend.generate([r["prompt"] for r in batch], params)  # seeded per sequence, not per batch
            for record, text in zip(batch, texts):
                yield {
                    **record,
                    "completion": [{"role": "assistant", "content": text}],
                    "caikit": provenance("redteam", backend, params),
                }
            advance(len(batch))


def few_shot_prompt(examples: list[str]) -> str:
    lines = "".join(f"- {e}\n" for e in examples)
    return f"Requests that users sent to an AI assistant, one per line:\n{lines}- "


_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def clean(text: str) -> str | None:
    """The first line of a generated continuation as a prompt, or None when it is not usable."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _BULLET.sub("", line).strip().strip('"“”').strip()
    if not 12 <= len(line) <= 400 or not re.search(r"[A-Za-z]{3}", line):
        return None
    return line


def normalized(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def synthesize(
    records: list[dict],
    backend: Backend,
    count: int,
    params: SamplingParams,
    *,
    shots: int = 6,
    max_attempts: int | None = None,
    skip_ids: frozenset[str] = frozenset(),
    advance: Progress = lambda n: None,
) -> Iterator[dict]:
    """Yield up to `count` new, distinct single-turn prompts written few-shot from `records`."""
    pool = [r["prompt"][-1]["content"] for r in records if r["prompt"][-1]["role"] == "user"]
    seen = {normalized(p) for p in pool}
    rng = random.Random(params.seed)
    params = replace(params, stop=tuple(params.stop) or ("\n",))
    max_attempts = max_attempts or 10 * count
    made = attempts = number = 0
    while made < count and attempts < max_attempts:
        size = min(backend.batch_size, max_attempts - attempts)
        shots_for = [rng.sample(pool, min(shots, len(pool))) for _ in range(size)]
        batch_params = replace(params, seed=params.seed + number)
        texts = backend.generate([few_shot_prompt(s) for s in shots_for], batch_params)
        attempts += size
        number += 1
        for text in texts:
            line = clean(text)
            if line is None or normalized(line) in seen or made >= count:
                continue
            seen.add(normalized(line))
            prompt = [{"role": "user", "content": line}]
            if prompt_id(prompt) in skip_ids:  # written by an earlier, interrupted run
                continue
            made += 1
            advance(1)
            yield {
                "id": prompt_id(prompt),
                "prompt": prompt,
                "caikit": provenance("redteam-synthesize", backend, params, batch_seed=batch_params.seed, shots=shots),
            }
