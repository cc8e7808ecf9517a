"""Record ids and provenance, shared by every stage.

Records follow TRL's conversational formats (`prompt`/`completion`, `prompt`/`chosen`/`rejected`),
plus an `id` (a hash of the prompt conversation, so stages can join and resume) and a `caikit`
field saying how the record was made.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from caikit import __version__


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def prompt_id(prompt: list[dict]) -> str:
    """Stable id of a prompt conversation: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(canonical(prompt).encode()).hexdigest()[:16]


def provenance(stage: str, backend=None, params=None, **extra) -> dict:
    """The `caikit` field of an output record."""
    info = {"stage": stage}
    if backend is not None:
        info.update(model=backend.model, backend=backend.name)
    if params is not None:
        info["sampling"] = params.as_dict()
        info["seed"] = params.seed
    info.update(extra)
    info["version"] = __version__
    info["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return info
