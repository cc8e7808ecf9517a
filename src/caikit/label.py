"""`caikit label`: AI feedback. A feedback model compares two responses under a constitution
principle (the question of `caikit.judge`); the normalized log-probabilities of ` (A)` and ` (B)`
give a soft preference label.

- Input: pairs to (re)label, or prompts with a policy that samples K responses per prompt, every
  pair of which is labelled (`sample_pairs`).
- Debiasing (default on): both orders are scored and averaged; the labeler's position bias
  (`judge.position_bias`: mean p(A) - 0.5, the same figure `eval labeler` reports) is reported.
- Ensembles: `principles_per_label` K > 1 averages K distinct sampled comparison principles.
- Chain of thought: reasoning first, then the answer is scored; clamped and averaged (`judge.Cot`).

All probabilities in a record are p(first response of the pair is better), before choosing:
`chosen` is the response with p >= 0.5 and `label` = p(chosen > rejected).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from caikit import inputs, judge
from caikit.backends import Backend, SamplingParams
from caikit.constitution import Comparison, Constitution
from caikit.errors import CaikitError
from caikit.records import preference_record, provenance


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


def check(options: LabelOptions, const: Constitution, kind: str) -> list[Comparison]:
    """Usage errors of the labelling settings, before anything is read or loaded; returns the
    comparison principles of `kind` to draw from."""
    comparisons = const.comparisons_for(kind)
    if len(comparisons) < options.principles_per_label:
        raise CaikitError(f"--principles-per-label {options.principles_per_label}: the constitution has "
                          f"{len(comparisons)} {kind} comparison principles")
    return comparisons


def cot_sampling(sampling: SamplingParams) -> SamplingParams:
    """How chain-of-thought reasoning is sampled: 128 tokens at the run's temperature (at least 0.1,
    so that several chains differ)."""
    return replace(sampling, max_new_tokens=128, temperature=max(sampling.temperature, 0.1))


def read_items(path: str, format: str, *, prompts: bool) -> tuple[list[dict], dict]:
    """What `label` labels: prompts to sample pairs for (`prompts`), or pairs; and the skip counts."""
    skipped = {"identical": 0, "empty": 0, "min_margin": 0}
    if prompts:
        return inputs.read_prompts(path, format), skipped
    items, counts = inputs.read_pairs(path)
    return items, {**skipped, **counts}


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
        jobs, owners = [], []
        for i, pair in enumerate(chunk):
            for principle in judge.draw_principles(comparisons, options.principles_per_label, options.seed, pair["id"]):
                jobs.append((pair["prompt"], pair["a"], pair["b"], principle))
                owners.append(i)
        cot = None
        if options.cot:
            cot = judge.Cot(options.cot_samples, options.clamp, replace(options.cot_params, seed=options.seed))
        judged = judge.score_pairs(backend, jobs, debias=options.debias, shots=shots, cot=cot)
        entries: dict[int, list[dict]] = {}
        for i, job, result in zip(owners, jobs, judged):
            entries.setdefault(i, []).append(_entry(job[3], result))
        for i, pair in enumerate(chunk):
            yield _record(pair, entries[i], backend, const, options)
        advance(len(chunk))


def _entry(principle: Comparison, result: dict) -> dict:
    """One principle's verdict; every probability is p(a is better)."""
    slot_a = result["p_slot_a"]
    entry = {"id": principle.id, "p_first_order": slot_a[0], "p_slot_a": slot_a}
    if len(slot_a) == 2:
        entry["p_second_order"] = judge.swapped(slot_a[1])
    if "reasoning" in result:
        entry["reasoning"] = result["reasoning"]
    entry["p"] = result["p"]
    return entry


def _record(pair: dict, principles: list[dict], backend, const: Constitution, options: LabelOptions) -> dict:
    p_a = sum(e["p"] for e in principles) / len(principles)
    extra = {k: v for k, v in pair.items() if k not in ("id", "prompt", "a", "b")}
    record = preference_record(pair["id"], pair["prompt"], pair["a"], pair["b"], p_a, principles=principles, **extra)
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


def sample_pairs(prompts: list[dict], policy: Backend, params: SamplingParams, skipped: dict) -> list[dict]:
    """Sample `params.n` responses per prompt and pair them; empty or identical pairs are counted and dropped."""
    n = params.n
    texts = policy.generate([r["prompt"] for r in prompts], params)
    pairs = []
    for pair in make_pairs(prompts, [texts[k * n : (k + 1) * n] for k in range(len(prompts))]):
        a, b = pair["a"].strip(), pair["b"].strip()
        skipped["identical"] += a == b
        skipped["empty"] += not (a and b)
        if a and b and a != b:
            pairs.append(pair)
    return pairs


def remaining(items: list[dict], done: set[str], *, prompts: bool) -> list[dict]:
    """What an interrupted run has left: prompts with no labelled pair yet, or pairs not yet labelled."""
    if prompts:
        labelled = {i.rsplit("-", 2)[0] for i in done}
        return [r for r in items if r["id"] not in labelled]
    return [p for p in items if p["id"] not in done]


def run(
    items: list[dict],
    feedback: Backend,
    const: Constitution,
    comparisons: list[Comparison],
    options: LabelOptions,
    *,
    policy: Backend | None = None,
    sampling: SamplingParams | None = None,
    min_margin: float = 0.0,
    hard: bool = False,
    skipped: dict | None = None,
    progress=lambda description, total: nullcontext(lambda n: None),
) -> Iterator[dict]:
    """Label `items` (pairs; or prompts when a `policy` samples `sampling.n` responses each) and yield
    the records kept after `min_margin`; `skipped` counts what was dropped and why."""
    skipped = skipped if skipped is not None else {}
    for reason in ("identical", "empty", "min_margin"):
        skipped.setdefault(reason, 0)
    pairs = items
    if policy is not None:
        with progress(f"sampling {sampling.n} responses", len(items)) as advance:
            pairs = sample_pairs(items, policy, sampling, skipped)
            advance(len(items))
    if not pairs:
        return
    with progress("labelling pairs", len(pairs)) as advance:
        for record in label_pairs(pairs, feedback, const, comparisons, options, advance):
            if abs(record["p_a"] - 0.5) < min_margin:
                skipped["min_margin"] += 1
                continue
            if hard:
                record["soft_label"], record["label"] = record["label"], 1.0
            yield record


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
        "position_bias": judge.position_bias(slot_a),
        "principle_agreement": {k: sum(v) / len(v) for k, v in sorted(agree.items())},
    }


def summary_rows(records: list[dict], skipped: dict, seconds: float, checked: dict | None = None) -> list[tuple[str, str]]:
    """The end-of-run table: counts, confidence, position bias, agreement with humans when checked."""
    stats = summarize(records)
    rows = [("pairs labelled", str(stats["pairs"]))]
    rows += [(f"skipped ({reason.replace('_', ' ')})", str(count)) for reason, count in skipped.items() if count]
    if records:
        rows.append(("mean label p(chosen)", f"{stats['mean_label']:.3f}"))
        rows.append(("mean confidence |2p-1|", f"{stats['mean_confidence']:.3f}"))
        if stats["position_bias"] is not None:
            rows.append(("position bias mean p(A) - 0.5", f"{stats['position_bias']:+.3f}"))
        rows += [(f"agreement with ensemble: {pid}", f"{share:.2f}") for pid, share in stats["principle_agreement"].items()]
    if checked:
        lo, hi = checked["ci95"]
        rows.append(("AI agrees with the human choice", f"{checked['agreement']:.3f} (95% CI {lo:.3f}-{hi:.3f}, n={checked['n']})"
                     + ("" if checked["signal"] else ": no measurable signal")))
    rows.append(("seconds", f"{seconds:.1f} ({len(records) / seconds if seconds else 0:.2f} pairs/s)"))
    return rows
