"""A constitution's content: critique/revision principles, comparison principles, few-shot examples,
and what every format's reader shares (the list of problems found, the text and message checks).
`caikit.constitution` reads and validates them; `caikit.constitution_json` reads the JSON formats."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field

from caikit.errors import CaikitError
from caikit.records import canonical

log = logging.getLogger("caikit.constitution")

KINDS = ("harmlessness", "helpfulness")


@dataclass(frozen=True)
class Principle:
    id: str
    critique: str
    revision: str


@dataclass(frozen=True)
class Comparison:
    id: str
    question: str
    kind: str = "harmlessness"


@dataclass(frozen=True)
class CritiqueExample:
    prompt: list  # messages, ending with the user turn
    response: str
    critique: str
    revision: str
    principle: str | None = None
    # The requests shown with this example; when empty, those of `principle` (or of the round's) are used.
    critique_request: str = ""
    revision_request: str = ""


@dataclass(frozen=True)
class ComparisonExample:
    prompt: list
    response_a: str
    response_b: str
    answer: str  # "A" or "B"
    question: str | None = None  # None: shown under whichever principle is being asked


@dataclass
class Constitution:
    name: str
    source: str
    description: str = ""
    principles: list[Principle] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    critique_examples: list[CritiqueExample] = field(default_factory=list)
    comparison_examples: list[ComparisonExample] = field(default_factory=list)

    @property
    def hash(self) -> str:
        content = {
            "principles": [asdict(p) for p in self.principles],
            "comparisons": [asdict(c) for c in self.comparisons],
            "critique_examples": [asdict(e) for e in self.critique_examples],
            "comparison_examples": [asdict(e) for e in self.comparison_examples],
        }
        return hashlib.sha256(canonical(content).encode()).hexdigest()[:12]

    def provenance(self) -> dict:
        return {"name": self.name, "hash": self.hash, "source": self.source}

    def comparisons_for(self, kind: str = "harmlessness") -> list[Comparison]:
        """The comparison principles that judge `kind` (harmlessness, helpfulness; "all": every one).
        The one rule for every command: a constitution with none of that kind (`helpful-only` asked
        about harmlessness) gives all its comparison principles, with a warning, not none."""
        if kind == "all":
            return list(self.comparisons)
        found = [c for c in self.comparisons if c.kind == kind]
        if not found and self.comparisons:
            log.warning("%s: no %s comparison principles; using all %d", self.source, kind, len(self.comparisons))
        return found or list(self.comparisons)

    def select(self, ids: list[str] | None, option: str = "--principles") -> list[Principle]:
        """The principles named in `ids` (all when None); unknown ids are a usage error."""
        if not ids:
            return list(self.principles)
        known = {p.id for p in self.principles}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise CaikitError(f"{option} {','.join(unknown)}: unknown principle id (known: {', '.join(sorted(known))})")
        return [p for p in self.principles if p.id in ids]


class Problems(list):
    """Every problem a reader finds, each as "where: what"."""

    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


def text_of(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def messages_of(value) -> list | None:
    """A few-shot prompt: a plain string (one user turn) or a list of {role, content} messages."""
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value.strip()}]
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        for m in value
    ):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    return None
