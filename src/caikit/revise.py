"""`caikit revise`: N rounds of critique -> revision (the SL-CAI data of Bai et al. 2022).

For each record from `redteam` and each round, a principle is drawn from the constitution
(independently per round, seeded by run seed + record id + round, so a record's draws do not
depend on batching or resuming). The model is asked to critique its latest answer under that
principle's critique request, then to rewrite it under the revision request.

Conversations are chat turns for the model's chat template: few-shot dialogues first (each one a
prompt, a first answer, critique request, critique, revision request, revision), then the real one.
- `context="append"`: round k+1 sees the whole chain of critiques and revisions so far;
  `context="fresh"`: only the prompt and the latest revision.
- `critique=False`: revise directly, without a critique step (the paper found this works for large
  models; it halves the generation cost).

Generation is batched across records: all critiques of a round in one call, then all revisions.
Output text is cleaned of leaked scaffolding ("Revision:", "Here is a revised response:", role
tags); an empty revision keeps the previous text and marks the round `failed`.

Deviations from the paper: principles and few-shot examples are presented as chat turns, not as a
raw `Human:/Assistant:` transcript, because the models caikit targets are chat-tuned.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from typing import Callable, Iterable, Iterator

from caikit.backends import Backend, SamplingParams
from caikit.constitution import Constitution, CritiqueExample, Principle
from caikit.errors import CaikitError
from caikit.records import batches, provenance

CONTEXTS = ("append", "fresh")
STOP = ("\nHuman:", "\nUser:", "CritiqueRequest:", "RevisionRequest:", "<|im_start|>", "<|im_end|>")

_PREFIX = re.compile(
    r"^\s*(?:\*\*|__)?(?:critique|revision|revised (?:response|reply|answer|version)|rewritten (?:response|reply|answer)"
    r"|assistant|response|answer)(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*",
    re.I,
)
_LEAD_IN = re.compile(
    r"^\s*(?:(?:sure|okay|ok|certainly|of course)[,!.]?\s*)?(?:here(?:'s| is) (?:a|the|my|an)\s+)"
    r"(?:revised|rewritten|new|updated|improved|better|critique)[^:\n]{0,60}:\s*",
    re.I,
)
_ROLE_TAG = re.compile(r"<\|im_start\|>\s*(?:assistant|user|system)?\s*|<\|im_end\|>|^\s*(?:assistant|user)\s*\n", re.I)


def check(const: Constitution, *, rounds: int, emit_round: int | None, keep_all: bool, principles: str | None) -> list[Principle]:
    """Usage errors of the revise settings, before anything is read or loaded; returns the
    critique/revision principles to draw from (`principles`: comma-separated ids, None for all)."""
    if emit_round and emit_round > rounds:
        raise CaikitError(f"--emit-round {emit_round}: only {rounds} rounds are run")
    if emit_round and keep_all:
        raise CaikitError("--emit-round and --keep-all do not go together")
    chosen = const.select([p.strip() for p in principles.split(",") if p.strip()] if principles else None)
    if not chosen:
        raise CaikitError(f"--constitution {const.source}: it has no critique/revision principles")
    return chosen


def clean(text: str) -> str:
    """Strip scaffolding a small model leaks into its output; stop at the next turn marker."""
    text = _ROLE_TAG.sub("", text)
    for marker in ("\nHuman:", "\nUser:", "\nCritiqueRequest:", "\nRevisionRequest:"):
        cut = text.find(marker)
        if cut != -1:
            text = text[:cut]
    previous = None
    while previous != text:
        previous = text
        text = _LEAD_IN.sub("", _PREFIX.sub("", text, count=1), count=1)
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def draw_principle(principles: list[Principle], seed: int, record_id: str, round_: int) -> Principle:
    return random.Random(f"{seed}:{record_id}:{round_}").choice(principles)


def draw_shots(examples: list[CritiqueExample], seed: int, record_id: str, shots: int) -> list[CritiqueExample]:
    if shots <= 0 or not examples:
        return []
    return random.Random(f"{seed}:{record_id}:shots").sample(examples, min(shots, len(examples)))


def example_turns(example: CritiqueExample, const: Constitution, fallback: Principle, critique: bool) -> list[dict]:
    """One few-shot dialogue as chat turns, with its own requests or its principle's."""
    own = next((p for p in const.principles if p.id == example.principle), fallback)
    critique_request = example.critique_request or own.critique
    revision_request = example.revision_request or own.revision
    turns = [*example.prompt, {"role": "assistant", "content": example.response}]
    if critique:
        turns += [
            {"role": "user", "content": critique_request},
            {"role": "assistant", "content": example.critique},
        ]
    return turns + [
        {"role": "user", "content": revision_request},
        {"role": "assistant", "content": example.revision},
    ]


class Chain:
    """The state of one record across rounds."""

    def __init__(self, record: dict, shots: list[dict]):
        self.record = record
        self.initial = record["completion"][-1]["content"]
        self.current = self.initial
        self.shots = shots
        self.rounds: list[dict] = []
        self.turns: list[dict] = [*record["prompt"], {"role": "assistant", "content": self.initial}]

    def base(self, context: str) -> list[dict]:
        if context == "append":
            return self.shots + self.turns
        return self.shots + [*self.record["prompt"], {"role": "assistant", "content": self.current}]


def run(
    records: Iterable[dict],
    backend: Backend,
    const: Constitution,
    params: SamplingParams,
    *,
    rounds: int = 4,
    critique: bool = True,
    context: str = "append",
    shots: int = 2,
    principles: list[Principle] | None = None,
    critique_tokens: int = 128,
    chunk_size: int = 64,
    emit_round: int | None = None,
    keep_all: bool = False,
    advance: Callable[[int], None] = lambda n: None,
) -> Iterator[dict]:
    """Yield revised records, `chunk_size` records at a time (each chunk: 2 batched calls per round)."""
    principles = principles or const.principles
    info = dict(
        constitution=const.provenance(),
        rounds=rounds,
        critique=critique,
        context=context,
        shots=shots,
        critique_tokens=critique_tokens,
    )
    keep = getattr(backend, "keep_prefixes", None)  # each call continues the conversations of the one before
    if keep:
        keep()
    for chunk in batches(records, chunk_size):
        chains = []
        for record in chunk:
            fallback = principles[0]
            examples = draw_shots(const.critique_examples, params.seed, record["id"], shots)
            turns = [t for e in examples for t in example_turns(e, const, fallback, critique)]
            chains.append(Chain(record, turns))
        for round_ in range(1, rounds + 1):
            drawn = [draw_principle(principles, params.seed, c.record["id"], round_) for c in chains]
            seed = params.seed + 10 * round_  # backends seed each sequence by its prompt: no batch number needed
            critiques = [""] * len(chains)
            if critique:
                asks = [c.base(context) + [{"role": "user", "content": p.critique}] for c, p in zip(chains, drawn)]
                critique_params = replace(params, max_new_tokens=critique_tokens, stop=STOP, seed=seed)
                critiques = [clean(t) for t in backend.generate(asks, critique_params)]
            asks = []
            for chain, principle, text in zip(chains, drawn, critiques):
                conv = chain.base(context)
                if critique:
                    conv = conv + [
                        {"role": "user", "content": principle.critique},
                        {"role": "assistant", "content": text or "(no critique)"},
                    ]
                asks.append(conv + [{"role": "user", "content": principle.revision}])
            revisions = [clean(t) for t in backend.generate(asks, replace(params, stop=STOP, seed=seed + 1))]
            for chain, principle, text, revision in zip(chains, drawn, critiques, revisions):
                step = {"round": round_, "principle_id": principle.id}
                if critique:
                    step["critique"] = text
                    chain.turns += [
                        {"role": "user", "content": principle.critique},
                        {"role": "assistant", "content": text or "(no critique)"},
                    ]
                step["revision"] = revision or chain.current
                if not revision:
                    step["failed"] = True  # empty after cleaning: keep the previous text
                chain.current = step["revision"]
                chain.turns += [
                    {"role": "user", "content": principle.revision},
                    {"role": "assistant", "content": chain.current},
                ]
                chain.rounds.append(step)
        for chain in chains:
            yield from _records(chain, backend, params, info, emit_round, keep_all)
        advance(len(chains))
    if keep:
        keep(0)


def _records(chain: Chain, backend, params, info, emit_round, keep_all) -> Iterator[dict]:
    base = {k: v for k, v in chain.record.items() if k not in ("completion", "caikit")}
    upstream = chain.record.get("caikit")
    meta = provenance("revise", backend, params, principle_ids=[s["principle_id"] for s in chain.rounds], **info)
    if upstream:
        meta["upstream"] = upstream
    initial = [{"role": "assistant", "content": chain.initial}]
    if keep_all:
        for step in chain.rounds:
            yield {
                **base,
                "id": f"{chain.record['id']}-r{step['round']}",
                "source_id": chain.record["id"],
                "round": step["round"],
                "completion": [{"role": "assistant", "content": step["revision"]}],
                "initial": initial,
                "revisions": chain.rounds[: step["round"]],
                "caikit": meta,
            }
        return
    final = chain.rounds[emit_round - 1]["revision"] if emit_round else chain.current
    yield {
        **base,
        "completion": [{"role": "assistant", "content": final}],
        "initial": initial,
        "revisions": chain.rounds,
        "caikit": meta,
    }
