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
from typing import Callable, Iterable, Iterator

from caikit import inputs, judge
from caikit.backends import Backend, SamplingParams
from caikit.constitution import Comparison, Constitution
from caikit.errors import CaikitError
from caikit.records import Selection, Shard, batches, preference_record, prompt_id, provenance


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


def selection(path: str, format: str, *, prompts: bool, skipped: dict, limit: int | None, shard: Shard | None,
              done: set[str]) -> Selection:
    """What `label` labels, read as it goes: prompts to sample pairs for (`prompts`), or pairs, whose
    skips are counted in `skipped` afresh on each reading; less what an interrupted run finished (a
    prompt with a labelled pair, or a pair)."""
    for reason in ("identical", "empty", "min_margin"):
        skipped.setdefault(reason, 0)

    def read():
        if prompts:
            return inputs.iter_prompts(path, format)
        skipped.update(identical=0, empty=0)
        return inputs.iter_pairs(path, skipped)

    labelled = {i.rsplit("-", 2)[0] for i in done} if prompts else done
    return Selection(read, limit=limit, shard=shard, key=lambda r: prompt_id(r["prompt"]) if prompts else r["id"],
                     skip=lambda item: item["id"] in labelled)


def label_pairs(
    pairs: Iterable[dict],
    backend: Backend,
    const: Constitution,
    comparisons: list[Comparison],
    options: LabelOptions,
    advance: Callable[[int], None] = lambda n: None,
) -> Iterator[dict]:
    """Yield one labelled record per pair `{"id", "prompt", "a", "b", ...}`, in chunks."""
    shots = const.comparison_examples if options.few_shot else []
    for chunk in batches(pairs, options.chunk_size):
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


def run(
    items: Iterable[dict],
    total: int,
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
    """Label `items` (`total` pairs; or prompts when a `policy` samples `sampling.n` responses each,
    `options.chunk_size` prompts at a time) and yield the records kept after `min_margin`; `skipped`
    counts what was dropped and why."""
    skipped = skipped if skipped is not None else {}
    for reason in ("identical", "empty", "min_margin"):
        skipped.setdefault(reason, 0)
    with progress(f"sampling {sampling.n} responses and labelling" if policy else "labelling pairs", total) as advance:
        if policy is None:
            labelled = label_pairs(items, feedback, const, comparisons, options, advance)
        else:
            labelled = _sampled(items, policy, sampling, skipped, feedback, const, comparisons, options, advance)
        for record in labelled:
            if abs(record["p_a"] - 0.5) < min_margin:
                skipped["min_margin"] += 1
                continue
            if hard:
                record["soft_label"], record["label"] = record["label"], 1.0
            yield record


def _sampled(prompts, policy, sampling, skipped, feedback, const, comparisons, options, advance) -> Iterator[dict]:
    """Sample and label `options.chunk_size` prompts at a time, advancing the bar by prompts."""
    for chunk in batches(prompts, options.chunk_size):
        yield from label_pairs(sample_pairs(chunk, policy, sampling, skipped), feedback, const, comparisons, options)
        advance(len(chunk))


class Summary:
    """Pairs, mean label and confidence, position bias and per-principle agreement with the ensemble,
    from records seen one at a time (sums and counts: memory does not grow with the records)."""

    def __init__(self):
        self.pairs, self.label, self.confidence, self.slot_a, self.asked = 0, 0.0, 0.0, 0.0, 0
        self.agree: dict[str, list[int]] = {}  # principle -> [agreeing, judged]

    def add(self, r: dict) -> None:
        self.pairs += 1
        self.label += r["label"]
        self.confidence += abs(r["p_a"] - 0.5) * 2
        for e in r["principles"]:
            self.slot_a += sum(e.get("p_slot_a", []))
            self.asked += len(e.get("p_slot_a", []))
            if len(r["principles"]) > 1:
                counts = self.agree.setdefault(e["id"], [0, 0])
                counts[0] += int((e["p"] >= 0.5) == (r["p_a"] >= 0.5))
                counts[1] += 1

    def result(self) -> dict:
        if not self.pairs:
            return {"pairs": 0}
        return {
            "pairs": self.pairs,
            "mean_label": self.label / self.pairs,
            "mean_confidence": self.confidence / self.pairs,
            "position_bias": judge.bias_of(self.slot_a, self.asked),
            "principle_agreement": {k: agreeing / judged for k, (agreeing, judged) in sorted(self.agree.items())},
        }


def summarize(records: Iterable[dict]) -> dict:
    """Summary of `records` (see Summary)."""
    summary = Summary()
    for record in records:
        summary.add(record)
    return summary.result()


def summary_rows(stats: dict, skipped: dict, seconds: float, checked: dict | None = None) -> list[tuple[str, str]]:
    """The end-of-run table from `summarize`'s figures: counts, confidence, position bias, agreement
    with humans when checked."""
    rows = [("pairs labelled", str(stats["pairs"]))]
    rows += [(f"skipped ({reason.replace('_', ' ')})", str(count)) for reason, count in skipped.items() if count]
    if stats["pairs"]:
        rows.append(("mean label p(chosen)", f"{stats['mean_label']:.3f}"))
        rows.append(("mean confidence |2p-1|", f"{stats['mean_confidence']:.3f}"))
        if stats["position_bias"] is not None:
            rows.append(("position bias mean p(A) - 0.5", f"{stats['position_bias']:+.3f}"))
        rows += [(f"agreement with ensemble: {pid}", f"{share:.2f}") for pid, share in stats["principle_agreement"].items()]
    if checked:
        lo, hi = checked["ci95"]
        rows.append(("AI agrees with the human choice", f"{checked['agreement']:.3f} (95% CI {lo:.3f}-{hi:.3f}, n={checked['n']})"
                     + ("" if checked["signal"] else ": no measurable signal")))
    rows.append(("seconds", f"{seconds:.1f} ({stats['pairs'] / seconds if seconds else 0:.2f} pairs/s)"))
    return rows
