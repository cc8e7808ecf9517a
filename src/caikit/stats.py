"""The statistics caikit reports: Wilson intervals, accuracy tables, Bradley-Terry strengths on the
Elo scale with bootstrap intervals, and pairwise metrics of a preference model (accuracy, margin,
expected calibration error)."""

from __future__ import annotations

import math
import random


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-max(min(x, 60), -60)))


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_table(hits_by_subset: dict[str, list[int]]) -> dict:
    """`{n, accuracy, ci95, subsets: {name: {n, accuracy, ci95}}}` from 0/1 hits per subset."""

    def summary(hits):
        lo, hi = wilson(sum(hits), len(hits))
        return {"n": len(hits), "accuracy": sum(hits) / len(hits), "ci95": [lo, hi]}

    everything = [h for hits in hits_by_subset.values() for h in hits]
    return {**summary(everything), "subsets": {k: summary(v) for k, v in sorted(hits_by_subset.items())}}


def bradley_terry(outcomes: list[tuple[int, int, float]], n: int, iters: int = 200) -> list[float]:
    """Log-strengths maximizing sum p log sigma(s_i - s_j) + (1 - p) log sigma(s_j - s_i), mean 0.

    A small Gaussian prior (0.01 * s^2) keeps strengths finite when one model wins every comparison.
    """
    s = [0.0] * n
    for _ in range(iters):
        grad = [-0.02 * x for x in s]
        hess = [0.02] * n
        for i, j, p in outcomes:
            q = 1 / (1 + math.exp(-max(min(s[i] - s[j], 50), -50)))
            grad[i] += p - q
            grad[j] -= p - q
            hess[i] += q * (1 - q)
            hess[j] += q * (1 - q)
        s = [x + 0.5 * g / h for x, g, h in zip(s, grad, hess)]  # damped diagonal Newton step
        mean = sum(s) / n
        s = [x - mean for x in s]
    return s


def elo(strengths: list[float]) -> list[float]:
    return [1000 + 400 / math.log(10) * x for x in strengths]


def bootstrap_elo(outcomes_by_prompt: dict[str, list[tuple[int, int, float]]], n: int, samples: int = 200, seed: int = 0):
    """(Elo per model, Elo per model in each of `samples` bootstrap draws of the prompts)."""
    prompts = list(outcomes_by_prompt)
    point = elo(bradley_terry([o for p in prompts for o in outcomes_by_prompt[p]], n))
    rng = random.Random(seed)
    draws = []
    for _ in range(samples):
        picked = [rng.choice(prompts) for _ in prompts]
        draws.append(elo(bradley_terry([o for p in picked for o in outcomes_by_prompt[p]], n, iters=60)))
    return point, draws


def interval(values: list[float]) -> list[float]:
    values = sorted(values)
    return [values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]]


def bootstrap_p(point: float, draws: list[float]) -> float:
    """Two-sided p-value of `point` != 0 from its bootstrap draws, by the normal approximation
    (z = point / the draws' standard deviation); smooth where counting draws past 0 would stop at
    1 / len(draws)."""
    mean = sum(draws) / len(draws)
    sd = math.sqrt(sum((d - mean) ** 2 for d in draws) / max(len(draws) - 1, 1))
    if sd == 0:
        return 1.0 if point == 0 else 0.0
    return math.erfc(abs(point) / sd / math.sqrt(2))


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values of one family of tests: the k-th smallest of m is multiplied
    by m - k + 1, then made non-decreasing; a test is significant at familywise level a when its
    adjusted p is below a."""
    order = sorted(pvalues, key=pvalues.get)
    adjusted, running = {}, 0.0
    for k, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - k) * pvalues[name]))
        adjusted[name] = running
    return adjusted


def ratings(outcomes_by_prompt: dict[str, list[tuple[int, int, float]]], names: list[str], samples: int = 200, seed: int = 0) -> dict:
    """Elo per model with a 95% bootstrap interval (prompts resampled with replacement), and under
    `differences` each pair's Elo difference with its bootstrap interval and p-value
    (`bootstrap_p`); `significant` there is uncorrected (the interval excludes 0) until a report
    corrects its family of differences (`caikit.verdicts.correct`)."""
    point, draws = bootstrap_elo(outcomes_by_prompt, len(names), samples, seed)
    out = {name: {"elo": point[k], "ci95": interval([d[k] for d in draws])} for k, name in enumerate(names)}
    differences = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            spread = [d[i] - d[j] for d in draws]
            lo, hi = interval(spread)
            differences[f"{names[i]} - {names[j]}"] = {"diff": point[i] - point[j], "ci95": [lo, hi], "p": bootstrap_p(point[i] - point[j], spread),
                                                       "significant": lo > 0 or hi < 0}
    return {"models": out, "differences": differences, "prompts": len(outcomes_by_prompt)}


def calibration(probs: list[float], outcomes: list[float], bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error of predicted probabilities against outcomes (0/1 or soft), and the
    reliability-diagram bins `{lo, hi, n, predicted, observed}` (empty bins left out)."""
    ece, table = 0.0, []
    for b in range(bins):
        members = [(p, y) for p, y in zip(probs, outcomes) if b / bins <= p < (b + 1) / bins or (b == bins - 1 and p == 1.0)]
        if members:
            predicted = sum(p for p, _ in members) / len(members)
            observed = sum(y for _, y in members) / len(members)
            ece += len(members) / len(probs) * abs(predicted - observed)
            table.append({"lo": b / bins, "hi": (b + 1) / bins, "n": len(members), "predicted": predicted, "observed": observed})
    return ece, table


def pair_metrics(chosen: list[float], rejected: list[float], labels: list[float], bins: int = 10) -> dict:
    """Pairwise accuracy (vs label > 0.5), mean margin, and expected calibration error of sigma(delta)."""
    deltas = [c - r for c, r in zip(chosen, rejected)]
    probs = [sigmoid(d) for d in deltas]
    decided = [(d, y) for d, y in zip(deltas, labels) if y != 0.5]
    correct = sum((d > 0) == (y > 0.5) for d, y in decided)
    ece, _ = calibration(probs, labels, bins)
    lo, hi = wilson(correct, len(decided))
    return {
        "pairs": len(deltas),
        "accuracy": correct / len(decided) if decided else None,
        "accuracy_ci95": [lo, hi],
        "mean_margin": sum(deltas) / len(deltas) if deltas else None,
        "ece": ece,
    }
