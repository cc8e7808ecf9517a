"""Picking the next token from logits, row by row, each sampled row by its own seeded generator
(so a row's text does not depend on what it is batched with)."""

from __future__ import annotations

import torch

TOP = 64  # tokens sorted per sampling step before falling back to a full sort


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, generators: list) -> list[int]:
    """The next token of each row: the argmax for greedy rows (generator None); for the others a
    draw from the nucleus (the most likely tokens whose mass before each reaches `top_p`) of the
    softmax at `temperature`, by one uniform number from the row's own generator. The nucleus is
    found among the top 64 tokens when they hold it, by a full sort otherwise (no sort at top_p 1)."""
    picked = logits.argmax(-1).tolist()
    rows = [k for k, g in enumerate(generators) if g is not None]
    if not rows:
        return picked
    index = torch.tensor(rows, device=logits.device)
    probs = (logits[index] / temperature[index].unsqueeze(1)).softmax(-1)
    p = top_p[index]
    top = min(TOP, probs.shape[1])
    values, order = probs.topk(top, dim=-1)
    short = ((values.sum(-1) < p) & (p < 1)).nonzero().flatten().tolist()
    for k, row in enumerate(rows):
        generator = generators[row]
        u = torch.rand(1, generator=generator, device=generator.device).item()
        if p[k] >= 1:  # the whole distribution: no need to sort it
            weights, tokens = probs[k], None
        else:
            weights, tokens = (values[k], order[k]) if k not in short else probs[k].sort(descending=True)
            weights = weights.masked_fill(weights.cumsum(0) - weights >= p[k], 0.0)
        cumulative = weights.cumsum(0)
        j = min(int(torch.searchsorted(cumulative, u * cumulative[-1], right=True)), len(cumulative) - 1)
        while weights[j] == 0:  # (u landed on the edge of a zero-weight token)
            j -= 1
        picked[row] = int(tokens[j]) if tokens is not None else j
    return picked
