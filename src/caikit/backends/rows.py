"""How the lean engine puts token rows into batches: runs of neighbours (in sorted order) whose
shared beginning is prefilled once, and batches of similar length, so that little is padded."""

from __future__ import annotations

MIN_PREFIX = 16  # shorter shared prefixes are not worth a separate prefill


def groups(rows: list[list[int]], longest: int = 256) -> tuple[list[list[int]], list[int], list[int]]:
    """Split sorted rows into runs of neighbours whose shared beginning is prefilled once: (each run's
    shared tokens, each row's run, each row's count of shared tokens; 0 for a row in no run). The
    runs maximize the tokens saved, sum of shared x (size - 1), by dynamic programming over runs of at
    most `longest` rows; a run must share at least MIN_PREFIX tokens."""
    n = len(rows)
    between = [common_prefix([rows[k], rows[k + 1]]) for k in range(n - 1)]
    best, cut = [0] * (n + 1), [0] * (n + 1)  # best saving of rows[:j], and where its last run starts
    for j in range(1, n + 1):
        best[j], cut[j] = best[j - 1], j - 1
        shared = len(rows[j - 1]) - 1
        for i in range(j - 2, max(-1, j - 1 - longest), -1):  # the run rows[i:j]
            shared = min(shared, between[i])
            if shared < MIN_PREFIX:
                break
            if best[i] + shared * (j - 1 - i) > best[j]:
                best[j], cut[j] = best[i] + shared * (j - 1 - i), i
    heads: list[list[int]] = []
    owners, starts = [0] * n, [0] * n
    j = n
    while j > 0:
        i = cut[j]
        if j - i > 1:
            shared = min(between[i : j - 1])
            heads.append(rows[i][:shared])
            for k in range(i, j):
                owners[k], starts[k] = len(heads) - 1, shared
        j = i
    return heads, owners, starts


def length_batches(lengths: list[int], batch: int, tokens: int = 2048, waste: float = 0.1, slack: int = 32) -> list[list[int]]:
    """Indices of rows grouped shortest first into batches of at most `batch` rows and, padded to
    their longest, at most `tokens` tokens (a row longer than that goes alone) of which at most a
    `waste` share, or `slack` tokens, is padding. (A tenth, not a quarter: the PM on 120 HHH pairs
    forwards 22,751 tokens instead of 25,528, 45 s instead of 49; the slack because a forward call
    costs about what 40 tokens do on a CPU, so short rows are better padded than split.)"""
    out: list[list[int]] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        padded = lengths[i] * (len(out[-1]) + 1) if out else 0
        if out and len(out[-1]) < batch and padded <= tokens and padded - real - lengths[i] <= max(waste * padded, slack):
            out[-1].append(i)
            real += lengths[i]
        else:
            out.append([i])
            real = lengths[i]
    return out


def common_prefix(rows: list[list[int]]) -> int:
    """Length of the longest token prefix all rows share, leaving each row at least one token."""
    first, n = rows[0], min(len(r) for r in rows) - 1
    for r in rows[1:]:
        k = 0
        while k < n and r[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)
