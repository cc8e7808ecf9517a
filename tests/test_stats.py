"""Wilson intervals, Bradley-Terry/Elo with bootstrap intervals, pair metrics."""

import math
import random

import pytest

from caikit import stats


def test_bradley_terry_recovers_a_known_ordering_and_intervals_cover_it():
    truth = [-1.0, 0.0, 0.5, 1.5]
    mean = sum(truth) / 4
    rng = random.Random(0)
    by_prompt = {}
    for k in range(300):
        outcomes = []
        for i in range(4):
            for j in range(i + 1, 4):
                p = 1 / (1 + math.exp(-(truth[i] - truth[j])))
                outcomes.append((i, j, float(rng.random() < p)))
        by_prompt[str(k)] = outcomes
    names = ["w", "x", "y", "z"]
    rated = stats.ratings(by_prompt, names, samples=100)
    table = rated["models"]
    assert rated["prompts"] == 300 and rated["differences"]["w - z"]["significant"] and rated["differences"]["w - z"]["diff"] < 0
    elos = [table[n]["elo"] for n in names]
    assert elos == sorted(elos)
    for n, t in zip(names, truth):
        true_elo = 1000 + 400 / math.log(10) * (t - mean)
        lo, hi = table[n]["ci95"]
        assert lo - 15 <= true_elo <= hi + 15  # the weak prior shrinks a little toward 1000
        assert lo < table[n]["elo"] < hi


def test_soft_outcomes_fit_exactly():
    s = stats.bradley_terry([(0, 1, 0.75)] * 50, 2)
    assert s[0] - s[1] == pytest.approx(math.log(3), rel=0.05)
