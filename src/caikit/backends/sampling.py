"""Picking the next token from logits, row by row, each sampled row by its own seeded generator
(so a row's text does not depend on what it is batched with)."""

from __future__ import annotations

import torch

TOP = (64, 2048)  # the likeliest tokens looked at, in turn, before falling back to a full sort


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, generators: list) -> list[int]:
    """The next token of each row: the argmax for greedy rows (generator None); for the others a
    draw from the nucleus (the most likely tokens whose mass before each reaches `top_p`) of the
    softmax at `temperature`, by one uniform number from the row's own generator. The nucleus is
    looked for among the top 64 tokens, then the top 2048, and found by a full sort only when they do
    not hold it; at top_p 1 nothing is sorted."""
    picked = logits.argmax(-1).tolist()
    rows = [k for k, g in enumerate(generators) if g is not None]
    if not rows:
        return picked
    index = torch.tensor(rows, device=logits.device)
    probs = (logits[index] / temperature[index].unsqueeze(1)).softmax(-1)
    p = top_p[index]
    u = torch.tensor([torch.rand(1, generator=generators[r], device=generators[r].device).item() for r in rows],
                     dtype=probs.dtype, device=probs.device)
    chosen = torch.empty(len(rows), dtype=torch.long, device=probs.device)
    whole = p >= 1  # the whole distribution: no need to sort it
    if whole.any():
        chosen[whole] = draw(probs[whole], u[whole])
    left = (~whole).nonzero().flatten()
    for top in (*TOP, probs.shape[1]):
        if not len(left):
            break
        values, order = probs[left].topk(min(top, probs.shape[1]), dim=-1)
        held = (values.sum(-1) >= p[left]) | (top >= probs.shape[1])
        if held.any():
            weights = values[held].masked_fill(values[held].cumsum(-1) - values[held] >= p[left][held].unsqueeze(1), 0.0)
            chosen[left[held]] = order[held].gather(1, draw(weights, u[left][held]).unsqueeze(1)).squeeze(1)
        left = left[~held]
    for k, token in zip(rows, chosen.tolist()):
        picked[k] = token
    return picked


def draw(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The column of each row of `weights` [rows, n] that uniform draws `u` [rows] land in, their
    cumulative weights scaled to each row's total."""
    cumulative = weights.cumsum(-1)
    j = torch.searchsorted(cumulative, (u * cumulative[:, -1]).unsqueeze(1), right=True).clamp(max=weights.shape[1] - 1)
    for r in (weights.gather(1, j) == 0).nonzero()[:, 0].tolist():  # (a draw on the edge of zero-weight tokens)
        while weights[r, j[r, 0]] == 0:
            j[r, 0] -= 1
    return j.squeeze(1)
