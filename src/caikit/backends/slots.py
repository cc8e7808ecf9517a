"""Where the lean engine keeps keys and values: `Slots`, one row per sequence of a call, and `Kept`,
finished sequences held across calls for prompts that continue them."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch


class Slots:
    """Per-layer key/value buffers [slots, kv_heads, length, head_dim]. The sequences in use occupy
    slots [0, used); before each forward `aim` says at which columns the batch rows' new tokens go
    and how many columns attention reads; the attention layers then call `update`, which stores the
    new keys/values and returns columns [0, width) of slots [0, batch) (views, not copies)."""

    def __init__(self, config, slots: int, length: int, dtype, device):
        heads = config.num_key_value_heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.keys = [torch.zeros(slots, heads, length, dim, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.columns, self.width = None, 0

    def aim(self, columns: torch.Tensor, width: int) -> None:
        """columns: [batch, tokens], where each new token goes; width: columns attention reads."""
        self.columns, self.width = columns, width

    def update(self, key: torch.Tensor, value: torch.Tensor, layer: int, *args, **kwargs):
        batch = len(self.columns)
        rows = torch.arange(batch, device=key.device).unsqueeze(1)
        keys, values = self.keys[layer], self.values[layer]
        keys[rows, :, self.columns] = key.transpose(1, 2).to(keys.dtype)
        values[rows, :, self.columns] = value.transpose(1, 2).to(values.dtype)
        return keys[:batch, :, : self.width], values[:batch, :, : self.width]

    def put(self, other: "Slots", first: int, width: int) -> None:
        """Copy columns [0, width) of every slot of `other` into slots first, first + 1, ..."""
        for mine, theirs in zip(self.keys + self.values, other.keys + other.values):
            mine[first : first + len(theirs), :, :width] = theirs[:, :, :width]

    def move(self, source: int, target: int, width: int) -> None:
        for buffer in self.keys + self.values:
            buffer[target, :, :width] = buffer[source, :, :width]


class Entry(NamedTuple):
    tokens: list[int]
    keys: list[torch.Tensor]  # per layer, [kv_heads, len(tokens), head_dim]
    values: list[torch.Tensor]
    hashes: list[int]  # of its beginnings of whole blocks
    size: int  # bytes


class Kept:
    """Keys and values of finished sequences (their prompt and generated tokens), kept across calls
    for later prompts that begin the same way: in `revise` a revision prompt continues its critique
    prompt and critique, and the next round's critique prompt continues that. A prompt's longest kept
    beginning is found through hashes of its whole blocks of BLOCK tokens, then extended token by
    token. At most `budget` bytes are kept; the least recently used sequences go first. Valid only
    while the model's weights stay as they were when the sequences were computed."""

    BLOCK = 16

    def __init__(self, budget: int):
        self.budget, self.used, self.count = budget, 0, 0
        self.entries: OrderedDict[int, Entry] = OrderedDict()  # by id, least recently used first
        self.index: dict[int, set[int]] = {}  # hash of a beginning of whole blocks -> ids of the entries holding it

    def _hashes(self, tokens: list[int], blocks: int) -> list[int]:
        out, h = [], 0
        for k in range(blocks):
            h = hash((h, *tokens[k * self.BLOCK : (k + 1) * self.BLOCK]))
            out.append(h)
        return out

    def add(self, tokens: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Keep `tokens` with their layers' keys and values, each [kv_heads, len(tokens), head_dim]."""
        size = sum(t.numel() * t.element_size() for t in keys + values)
        if size > self.budget or len(tokens) < self.BLOCK:
            return
        while self.used + size > self.budget:
            self._drop(next(iter(self.entries)))
        hashes = self._hashes(tokens, len(tokens) // self.BLOCK)
        self.entries[self.count] = Entry(tokens, keys, values, hashes, size)
        for h in hashes:
            self.index.setdefault(h, set()).add(self.count)
        self.used += size
        self.count += 1

    def _drop(self, entry: int) -> None:
        dropped = self.entries.pop(entry)
        for h in dropped.hashes:
            holders = self.index[h]
            holders.discard(entry)
            if not holders:
                del self.index[h]
        self.used -= dropped.size

    def find(self, tokens: list[int]) -> tuple[tuple[list, list] | None, int]:
        """The kept (keys, values) holding the longest beginning of `tokens`, and its length (at
        most len(tokens) - 1, so that a token is left to prefill); (None, 0) when none is kept."""
        holders, length = set(), 0
        for k, h in enumerate(self._hashes(tokens, (len(tokens) - 1) // self.BLOCK)):
            if h not in self.index:
                break
            holders, length = self.index[h], (k + 1) * self.BLOCK
        best, longest = None, 0
        for entry in holders:  # (each agrees with `tokens` up to `length` unless hashes collide; a block more at most)
            held = self.entries[entry].tokens
            if held[:length] != tokens[:length]:
                continue
            n, limit = length, min(len(held), len(tokens) - 1)
            while n < limit and held[n] == tokens[n]:
                n += 1
            if n > longest:
                best, longest = entry, n
        if best is None:
            return None, 0
        self.entries.move_to_end(best)
        return (self.entries[best].keys, self.entries[best].values), longest
