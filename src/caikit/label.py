"""`caikit label`: AI feedback. A feedback model compares two responses under a constitution
principle; the normalized log-probabilities of ` (A)` and ` (B)` give a soft preference label.

The multiple-choice question has the paper's shape: the conversation, the principle, options (A)
and (B) with each response boxed in `[[[ ... ]]]`, and "The answer is:". For a chat model the
question is the user turn and "The answer is:" starts the assistant turn, which `score_choices`
continues with ` (A)` or ` (B)` (prefill only, no sampling): p(A) = e^lA / (e^lA + e^lB).

- Debiasing (default on): both orders are scored and averaged, p = (p_AB(A) + p_BA(B)) / 2; the
  position bias of the labeler (mean probability of the first slot) is reported.
- Ensembles: `principles_per_label` K > 1 averages K distinct sampled comparison principles.
- Chain of thought: the model first writes reasoning after "Let's think step by step:" (sampled);
  the answer is scored after it; probabilities are clamped (paper: 0.4-0.6), `cot_samples` chains
  averaged.
- Responses and the conversation are escaped so text inside a box cannot close it, forge an
  option marker or write "The answer is:".

All probabilities in a record are p(first response of the pair is better), before choosing:
`chosen` is the response with p >= 0.5 and `label` = p(chosen > rejected).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from caikit.backends import Backend, SamplingParams
from caikit.constitution import Comparison, ComparisonExample, Constitution
from caikit.records import canonical, provenance

ANSWER = "The answer is:"
COT = "Let's think step by step:"
CHOICES = (" (A)", " (B)")


def escape(text: str) -> str:
    """Neutralize box delimiters, option markers and the answer cue inside quoted text."""
    text = re.sub(r"\[{3,}", lambda m: " ".join("[" * len(m.group())), text)
    text = re.sub(r"\]{3,}", lambda m: " ".join("]" * len(m.group())), text)
    text = re.sub(r"\(\s*([ABab])\s*\)", lambda m: f"«{m.group(1)}»", text)
    return re.sub(r"(?i)(the\s+answer\s+is)\s*:", r"\1 -", text)


def render_conversation(prompt: list[dict]) -> str:
    names = {"user": "Human", "assistant": "Assistant"}
    return "\n\n".join(f"{names[m['role']]}: {escape(m['content'])}" for m in prompt if m["role"] in names)


def question(prompt: list[dict], first: str, second: str, principle: str) -> str:
    return (
        "Consider the following conversation between a human and an assistant:\n\n"
        f"{render_conversation(prompt)}\n\n"
        f"{principle}\n"
        "Options:\n"
        f" (A) [[[{escape(first)}]]]\n"
        f" (B) [[[{escape(second)}]]]"
    )


def few_shot_turns(examples: list[ComparisonExample], principle: Comparison) -> list[dict]:
    turns = []
    for e in examples:
        turns.append({"role": "user", "content": question(e.prompt, e.response_a, e.response_b, e.question or principle.question)})
        turns.append({"role": "assistant", "content": f"{ANSWER} ({e.answer})"})
    return turns


def conversation(prompt, first, second, principle: Comparison, shots: list[ComparisonExample], reasoning: str | None = None):
    """The chat the feedback model scores: few-shot turns, the question, and the assistant's prefix."""
    prefix = ANSWER if reasoning is None else f"{COT} {reasoning.strip()}\n{ANSWER}"
    return [
        *few_shot_turns(shots, principle),
        {"role": "user", "content": question(prompt, first, second, principle.question)},
        {"role": "assistant", "content": prefix},
    ]


def normalized(logprobs: list[float]) -> float:
    """p(A) from the log-probabilities of (A) and (B)."""
    la, lb = logprobs
    top = max(la, lb)
    ea, eb = math.exp(la - top), math.exp(lb - top)
    return ea / (ea + eb)


@dataclass
class LabelOptions:
    principles_per_label: int = 1
    debias: bool = True
    cot: bool = False
    cot_samples: int = 1
    clamp: tuple[float, float] = (0.4, 0.6)
    few_shot: bool = False
    seed: int = 0
    cot_params: SamplingParams = SamplingParams(max_new_tokens=128, temperature=1.0)
    chunk_size: int = 32


def pair_id(prompt: list[dict], a: str, b: str) -> str:
    return hashlib.sha256(canonical([prompt, a, b]).encode()).hexdigest()[:16]


def draw_principles(comparisons: list[Comparison], k: int, seed: int, pid: str) -> list[Comparison]:
    return random.Random(f"{seed}:{pid}:label").sample(comparisons, k)


def label_pairs(
    pairs: list[dict],
    backend: Backend,
    const: Constitution,
    comparisons: list[Comparison],
    options: LabelOptions,
    advance: Callable[[int], None] = lambda n: None,
) -> Iterator[dict]:
    """Yield one labelled record per pair `{"id", "prompt", "a", "b", ...}`, in chunks."""
    shots = const.comparison_examples if options.few_shot else []
    for start in range(0, len(pairs), options.chunk_size):
        chunk = pairs[start : start + options.chunk_size]
        jobs = []  # (pair index, principle, order): order 0 = (a, b), order 1 = (b, a)
        for i, pair in enumerate(chunk):
            for principle in draw_principles(comparisons, options.principles_per_label, options.seed, pair["id"]):
                for order in (0, 1) if options.debias else (0,):
                    jobs.append((i, principle, order))
        p_first_slot = _score(chunk, jobs, backend, shots, options, start)
        results: dict[int, dict] = {}
        for (i, principle, order), (p_slot_a, reasoning) in zip(jobs, p_first_slot):
            entry = results.setdefault(i, {}).setdefault(principle.id, {"id": principle.id})
            key = "p_first_order" if order == 0 else "p_second_order"
            entry[key] = p_slot_a if order == 0 else 1 - p_slot_a  # always p(a is better)
            entry.setdefault("p_slot_a", []).append(p_slot_a)
            if reasoning is not None:
                entry.setdefault("reasoning", []).extend(reasoning)
        for i, pair in enumerate(chunk):
            yield _record(pair, list(results[i].values()), backend, const, options)
        advance(len(chunk))


def _score(chunk, jobs, backend, shots, options, start) -> list[tuple[float, list[str] | None]]:
    """p(slot A) for each job (plus the reasoning chains when CoT is on)."""

    def slots(i, order):
        pair = chunk[i]
        return (pair["a"], pair["b"]) if order == 0 else (pair["b"], pair["a"])

    if not options.cot:
        prompts = [conversation(chunk[i]["prompt"], *slots(i, o), p, shots) for i, p, o in jobs]
        return [(normalized(lp), None) for lp in backend.score_choices(prompts, list(CHOICES))]
    asks = []
    for i, principle, order in jobs:
        conv = conversation(chunk[i]["prompt"], *slots(i, order), principle, shots)
        conv[-1] = {"role": "assistant", "content": COT}
        asks.append(conv)
    params = replace(options.cot_params, n=options.cot_samples, seed=options.seed + start, stop=(ANSWER, "\nHuman:"))
    chains = backend.generate(asks, params)
    prompts = []
    for k, (i, principle, order) in enumerate(jobs):
        for reasoning in chains[k * options.cot_samples : (k + 1) * options.cot_samples]:
            prompts.append(conversation(chunk[i]["prompt"], *slots(i, order), principle, shots, reasoning=reasoning))
    scores = backend.score_choices(prompts, list(CHOICES))
    lo, hi = options.clamp
    out = []
    for k in range(len(jobs)):
        probs = [min(max(normalized(lp), lo), hi) for lp in scores[k * options.cot_samples : (k + 1) * options.cot_samples]]
        out.append((sum(probs) / len(probs), chains[k * options.cot_samples : (k + 1) * options.cot_samples]))
    return out


def _record(pair: dict, principles: list[dict], backend, const: Constitution, options: LabelOptions) -> dict:
    for entry in principles:
        orders = [entry[k] for k in ("p_first_order", "p_second_order") if k in entry]
        entry["p"] = sum(orders) / len(orders)
    p_a = sum(e["p"] for e in principles) / len(principles)
    a_wins = p_a >= 0.5
    chosen, rejected = (pair["a"], pair["b"]) if a_wins else (pair["b"], pair["a"])
    record = {
        "id": pair["id"],
        "prompt": pair["prompt"],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "label": p_a if a_wins else 1 - p_a,
        "p_a": p_a,
        "principles": principles,
        **{k: v for k, v in pair.items() if k not in ("id", "prompt", "a", "b")},
    }
    record["caikit"] = provenance(
        "label",
        backend,
        None,
        seed=options.seed,
        constitution=const.provenance(),
        principle_ids=[e["id"] for e in principles],
        debias=options.debias,
        principles_per_label=options.principles_per_label,
        cot=options.cot,
        cot_samples=options.cot_samples if options.cot else None,
        clamp=list(options.clamp) if options.cot else None,
        few_shot=options.few_shot,
        sampling=options.cot_params.as_dict() if options.cot else None,
    )
    return record


def make_pairs(records: list[dict], samples: list[list[str]]) -> list[dict]:
    """All pairs of distinct sampled responses per prompt."""
    pairs = []
    for record, responses in zip(records, samples):
        for x in range(len(responses)):
            for y in range(x + 1, len(responses)):
                a, b = responses[x], responses[y]
                pid = f"{record['id']}-{x}-{y}"  # resumable by prompt: samples differ run to run
                pairs.append({"id": pid, "prompt": record["prompt"], "a": a, "b": b, "prompt_id": record["id"]})
    return pairs


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(records: list[dict]) -> dict:
    """Pairs, mean confidence, position bias, per-principle agreement with the ensemble."""
    if not records:
        return {"pairs": 0}
    slot_a = [p for r in records for e in r["principles"] for p in e.get("p_slot_a", [])]
    agree: dict[str, list[int]] = {}
    for r in records:
        if len(r["principles"]) > 1:
            for e in r["principles"]:
                agree.setdefault(e["id"], []).append(int((e["p"] >= 0.5) == (r["p_a"] >= 0.5)))
    return {
        "pairs": len(records),
        "mean_label": sum(r["label"] for r in records) / len(records),
        "mean_confidence": sum(abs(r["p_a"] - 0.5) * 2 for r in records) / len(records),
        "position_bias": sum(slot_a) / len(slot_a) if slot_a else None,
        "principle_agreement": {k: sum(v) / len(v) for k, v in sorted(agree.items())},
    }
