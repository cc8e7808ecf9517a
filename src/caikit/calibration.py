"""`caikit eval labeler`: does a feedback model agree with human preference judgments, and which
labeling mode makes it agree best? (The paper's Figure 4 question, asked of *your* feedback model.)

Human-labelled pairs come from any comparison file caikit reads (hh-rlhf `{chosen, rejected}`, the
paper's 438 HHH file, BIG-bench JSON, `{prompt, chosen, rejected}`): each preferred response is
paired with each less-preferred one. Which response sits in slot A is a coin flip seeded by the pair
id, so a labeler that always says (A) scores 50%, not 100%.

Modes (`--modes`, comma-separated): `single` (one principle, one order), `debiased` (one principle,
both orders averaged), `ensemble-K` (K principles, both orders), `few-shot` (the constitution's
comparison examples first), `cot` (reasoning, then the answer, clamped), `cot-K` (K reasoning chains
averaged: a self-ensemble). For each: agreement with humans and its Wilson 95% interval, position
bias (mean p(slot A) - 0.5), mean confidence |2p - 1|, expected calibration error of p(human's
choice), and seconds and tokens per label; and agreement by principle over all single-principle
judgments.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from caikit import evals, judge
from caikit.errors import CaikitError
from caikit.label import LabelOptions, label_pairs
from caikit.records import pair_id
from caikit.stats import calibration, wilson

MODE_HELP = "single, debiased, ensemble-K, few-shot, cot, cot-K"


@dataclass(frozen=True)
class Mode:
    name: str
    principles: int = 1
    debias: bool = True
    few_shot: bool = False
    cot: bool = False
    cot_samples: int = 1

    def options(self, *, seed: int, clamp: tuple[float, float], cot_params) -> LabelOptions:
        """`label`'s options for this mode."""
        return LabelOptions(principles_per_label=self.principles, debias=self.debias, cot=self.cot, cot_samples=self.cot_samples,
                            clamp=clamp, few_shot=self.few_shot, seed=seed, cot_params=cot_params)


def parse_modes(spec: str) -> list[Mode]:
    modes = []
    for name in [m.strip() for m in spec.split(",") if m.strip()]:
        if name == "single":
            modes.append(Mode(name, debias=False))
        elif name == "debiased":
            modes.append(Mode(name))
        elif name == "few-shot":
            modes.append(Mode(name, few_shot=True))
        elif name == "cot":
            modes.append(Mode(name, cot=True))
        elif match := re.fullmatch(r"(ensemble|cot)-(\d+)", name):
            k = int(match.group(2))
            if k < 1:
                raise CaikitError(f"--modes {name}: K must be at least 1")
            modes.append(Mode(name, principles=k) if match.group(1) == "ensemble" else Mode(name, cot=True, cot_samples=k))
        else:
            raise CaikitError(f"--modes {name}: unknown mode; choose from {MODE_HELP}")
    if not modes:
        raise CaikitError(f"--modes: give at least one of {MODE_HELP}")
    return modes


def human_pairs(paths: list[str], limit: int | None, seed: int) -> list[dict]:
    """Pairs `{"id", "prompt", "a", "b", "human": 1 if a is the human's choice else 0, "subset"}`.
    Pairs with an empty or identical response (hh-rlhf has some) are skipped."""
    from caikit import inputs

    def compared():  # (prompt, preferred, other, subset)
        for path in evals.data_files(paths):
            if path.suffix == ".json":
                for item in evals.bigbench_items(path):
                    best = max(item["targets"])
                    top = item["responses"][item["targets"].index(best)]
                    yield from ((item["prompt"], top, r, item["subset"]) for r, t in zip(item["responses"], item["targets"])
                                if t < best and r.strip() and r != top)
            else:
                yield from ((p["prompt"], p["a"], p["b"], p.get("subset", evals.subset_name(path))) for p in inputs.iter_pairs(str(path), {}))

    pairs = []
    for prompt, top, other, subset in itertools.islice(compared(), limit):  # (all of them when limit is None)
        pid = pair_id(prompt, top, other)
        flip = random.Random(f"{seed}:{pid}:slot").random() < 0.5
        a, b = (other, top) if flip else (top, other)
        pairs.append({"id": pid, "prompt": prompt, "a": a, "b": b, "human": 0 if flip else 1, "subset": subset})
    if not pairs:
        raise CaikitError(f"{', '.join(paths)}: no human-labelled pairs found")
    return pairs


def measure(backend, const, comparisons, pairs: list[dict], options: LabelOptions, progress=lambda n: None) -> tuple[dict, list[dict]]:
    """Label human-judged `pairs` as `label` would with `options` (a run's own, or an `eval labeler`
    mode's); (the figures against the human choices, the labelled records). The one way caikit
    checks a feedback model against humans: `label --check-human`, `eval labeler`, `eval compare`."""
    tokens = getattr(backend, "prompt_tokens", 0) + backend.generated_tokens
    started = time.perf_counter()
    records = list(label_pairs([{k: v for k, v in p.items() if k != "human"} for p in pairs], backend, const, comparisons,
                               options, advance=progress))
    seconds = time.perf_counter() - started
    tokens = getattr(backend, "prompt_tokens", 0) + backend.generated_tokens - tokens
    return figures(records, [p["human"] for p in pairs], seconds, tokens), records


def agrees(p: float, human: int) -> bool:
    """Whether p(a better) sides with the human; a tie (0.5, up to rounding) sides with nobody."""
    return abs(p - 0.5) > 1e-9 and (p > 0.5) == bool(human)


def figures(records: list[dict], human: list[int], seconds: float, tokens: int) -> dict:
    """Agreement (with interval), position bias, confidence, calibration and cost of labelled records."""
    p = [r["p_a"] for r in records]
    agree = sum(agrees(x, y) for x, y in zip(p, human))
    lo, hi = wilson(agree, len(p))
    slots = [s for r in records for e in r["principles"] for s in e["p_slot_a"]]
    ece, bins = calibration(p, human)
    return {
        "n": len(p),
        "agreement": agree / len(p),
        "ci95": [lo, hi],
        "signal": lo > 0.5,
        "position_bias": judge.position_bias(slots),
        "confidence": sum(abs(2 * x - 1) for x in p) / len(p),
        "ece": ece,
        "reliability": bins,
        "seconds_per_label": seconds / len(p),
        "tokens_per_label": tokens / len(p),
    }


def by_principle(runs: dict[str, list[dict]], human: list[int]) -> dict[str, dict]:
    """Agreement of each principle's own verdicts (every mode's single-principle judgments pooled)."""
    found: dict[str, list[int]] = {}
    for records in runs.values():
        for record, y in zip(records, human):
            for entry in record["principles"]:
                found.setdefault(entry["id"], []).append(int(agrees(entry["p"], y)))
    out = {}
    for pid, hits in sorted(found.items(), key=lambda kv: -sum(kv[1]) / len(kv[1])):
        lo, hi = wilson(sum(hits), len(hits))
        out[pid] = {"n": len(hits), "agreement": sum(hits) / len(hits), "ci95": [lo, hi]}
    return out


def verdict(results: dict) -> str:
    """One sentence on whether the feedback carries signal, naming the best mode."""
    modes = results["modes"]
    best = max(modes, key=lambda m: modes[m]["ci95"][0])
    b = modes[best]
    if b["signal"]:
        caution = (f" It is the best of {len(modes)} modes, so allow for chance: a lower bound this close to 50% is weak evidence."
                   if len(modes) > 1 and b["ci95"][0] < 0.55 else "")
        return (f"The feedback model agrees with humans above chance: best mode {best}, {b['agreement']:.1%} "
                f"(95% CI {b['ci95'][0]:.1%}-{b['ci95'][1]:.1%}, n={b['n']}).{caution}")
    return (f"No mode agrees with humans measurably above chance (best: {best}, {b['agreement']:.1%}, 95% CI "
            f"{b['ci95'][0]:.1%}-{b['ci95'][1]:.1%}, n={b['n']}): labels from this model carry no measurable signal.")


def save(output: Path, results: dict, runs: dict[str, list[dict]]) -> None:
    """`eval labeler -o DIR`: results.json, reliability.png and each mode's labels (labels.MODE.jsonl)."""
    from caikit.outputs import JsonlWriter

    output.mkdir(parents=True, exist_ok=True)
    for name, records in runs.items():
        with JsonlWriter(str(output / f"labels.{name}.jsonl")) as out:
            for record in records:
                out.write(record)
    plot_reliability(results, output / "reliability.png")
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def plot_reliability(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for name, m in results["modes"].items():
        bins = m["reliability"]
        ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o", label=f"{name} (ECE {m['ece']:.3f})")
    ax.set_xlabel("predicted p(human's choice)")
    ax.set_ylabel("observed share of human choices")
    ax.set_title("Feedback model vs human judgments")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(backend, const, comparisons, pairs, modes: list[Mode], *, seed: int, clamp, cot_params, progress) -> tuple[dict, dict]:
    """Every mode on the same pairs; (results, records by mode)."""
    results, runs = {"pairs": len(pairs), "modes": {}}, {}
    for mode in modes:
        if mode.principles > len(comparisons):
            raise CaikitError(f"--modes {mode.name}: the constitution has only {len(comparisons)} comparison principles")
    for mode in modes:
        options = mode.options(seed=seed, clamp=clamp, cot_params=replace(cot_params, seed=seed))
        with progress(f"labeler: {mode.name}", len(pairs)) as advance:
            results["modes"][mode.name], runs[mode.name] = measure(backend, const, comparisons, pairs, options, progress=advance)
    human = [p["human"] for p in pairs]
    results["principles"] = by_principle({k: v for k, v in runs.items() if not k.startswith("cot")}, human)
    results["verdict"] = verdict(results)
    return results, runs
