"""Record ids, record shapes and provenance, shared by every stage.

Records follow TRL's conversational formats plus an `id` (a content hash, so stages can join and
resume) and a `caikit` field saying how the record was made (`provenance`).

Prompt-completion (redteam, revise; TRL's SFT format):
    {"id": "e1b61d51ac4f55a6", "prompt": [{"role": "user", "content": "How do I pick a lock?"}],
     "completion": [{"role": "assistant", "content": "..."}], "caikit": {"stage": "redteam", ...}}

Preference (label; TRL's reward/DPO format, `label` = p(chosen better than rejected)):
    {"id": "3f0c9a...", "prompt": [{"role": "user", "content": "..."}],
     "chosen": [{"role": "assistant", "content": "..."}], "rejected": [{"role": "assistant", "content": "..."}],
     "label": 0.63, "p_a": 0.37, "principles": [...], "caikit": {"stage": "label", ...}}
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from caikit import __version__


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_id(obj, length: int = 16) -> str:
    """A stable id for any JSON value: the first `length` hex digits of the SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:length]


def prompt_id(prompt: list[dict]) -> str:
    """Stable id of a prompt conversation."""
    return content_id(prompt)


def pair_id(prompt: list[dict], a: str, b: str) -> str:
    """Stable id of a pair of responses to a prompt (in this order)."""
    return content_id([prompt, a, b])


def assistant(text: str) -> list[dict]:
    """A response as TRL's conversational completion: one assistant message."""
    return [{"role": "assistant", "content": text}]


def preference_record(rid: str, prompt: list[dict], a: str, b: str, p_a: float, **extra) -> dict:
    """The preference record for responses `a`, `b` with p(a better) = `p_a`: the likelier one is `chosen`."""
    a_wins = p_a >= 0.5
    chosen, rejected = (a, b) if a_wins else (b, a)
    return {
        "id": rid,
        "prompt": prompt,
        "chosen": assistant(chosen),
        "rejected": assistant(rejected),
        "label": p_a if a_wins else 1 - p_a,
        "p_a": p_a,
        **extra,
    }


def provenance(stage: str, backend=None, params=None, **extra) -> dict:
    """The `caikit` field of an output record."""
    info = {"stage": stage}
    if backend is not None:
        info.update(model=backend.model, backend=backend.name, **getattr(backend, "details", {}))
    if params is not None:
        info["sampling"] = params.as_dict()
        info["seed"] = params.seed
    info.update(extra)
    info["version"] = __version__
    info["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return info
