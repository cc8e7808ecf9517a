"""A lean decode engine for the transformers backend: the model's own decoder layers, driven without
`generate` or the model's forward wrapper.

- **Static KV slots.** Keys and values live in buffers preallocated per call, one row (slot) per
  sequence, written in place; no per-step concatenation and no copy when a sequence ends.
- **Refill.** A finished sequence hands its slot to the next waiting prompt, so the batch stays full
  instead of waiting for its longest sample (continuous batching).
- **Shared beginnings once.** Prompts are taken in sorted order; neighbours that start with the same
  tokens (a few-shot block, a system prompt, one conversation judged under several principles or in
  both option orders) have those tokens prefilled once and copied into each slot.
- **Finished sequences kept across calls** when a caller asks (`keep`; `revise` does): a prompt
  that continues an earlier generation copies its keys and values instead of prefilling them.
- **Exact nucleus sampling without a full sort** when the top 64 (or 2048) tokens hold the nucleus.

Each sequence starts at column 0 of its slot (no left padding), so positions are plain counts. It
drives any model whose decoder layers take (hidden, attention_mask, position_embeddings, cache) and
call `cache.update` (Llama, Mistral, Qwen2/3, SmolLM...); `Engine(model).agrees()` checks a model against
its own forward before it is used, and the backend keeps its plain loop for the rest.
"""

from __future__ import annotations

import inspect
from collections import deque

import torch

from caikit.backends.rows import MIN_PREFIX, groups, length_batches
from caikit.backends.slots import Kept, Slots

SHORT = 16  # choice tokens: rows ending in at most this many wanted tokens are scored as a prompt's choices


def cache_kwarg(function) -> str:
    """The name under which `function` (a model's or layer's forward) takes its KV cache:
    transformers renamed `past_key_values` to `cache` in 5.x; speak whichever this version knows."""
    return "cache" if "cache" in inspect.signature(function).parameters else "past_key_values"


def returned_cache(output):
    """The KV cache a model's forward returned, under either name."""
    return output.cache if hasattr(output, "cache") else output.past_key_values


class Engine:
    """Runs token rows through `model` (a causal LM from transformers) with `Slots`."""

    def __init__(self, model):
        self.model = model
        self.inner = model.base_model
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.share_prefixes = True  # (off only to measure what sharing saves)
        self.kept: Kept | None = None  # sequences kept across calls (`keep`)
        layers = getattr(self.inner, "layers", None)  # (a model without them fails `agrees` and keeps the plain loop)
        self.cache_kwarg = cache_kwarg(layers[0].forward) if layers else "past_key_values"

    def agrees(self) -> bool:
        """Whether this engine computes what the model's own forward does, compared like with like:
        its prefill of 11 tokens against the model's forward on them, and its decode step of one more
        token against the model's own step on its cache, or against the model's forward over all 12
        tokens: in half precision the model's two ways differ from each other on some CPUs' kernels
        (bfloat16 with AVX-512: by 0.125, one rounding step at logit 22, where the engine's step equals
        the forward exactly), and agreeing with either is agreeing with the model. Models whose layers
        take other arguments match neither, fail here and keep the plain loop."""
        atol = 1e-3 if self.dtype == torch.float32 else 0.05
        ids = torch.tensor([list(range(3, 15))], device=self.device)
        try:
            with torch.inference_mode():
                cache, first = self.prefill([ids[0, :-1].tolist()])
                slots = Slots(self.model.config, 1, ids.shape[1], self.dtype, self.device)
                slots.put(cache, 0, ids.shape[1] - 1)
                second = self.step(slots, ids[0, -1:], torch.tensor([ids.shape[1] - 1], device=self.device))
                theirs = self.model(input_ids=ids[:, :-1], use_cache=True)
                after = self.model(input_ids=ids[:, -1:], **{cache_kwarg(self.model.forward): returned_cache(theirs)}).logits[0, -1].float()
                whole = self.model(input_ids=ids).logits[0, -1].float()
        except Exception:  # noqa: BLE001 (any failure means: not this engine)
            return False

        def close(a, b):
            return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=0.0)

        return close(first[0], theirs.logits[0, -1].float()) and (close(second[0], after) or close(second[0], whole))

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """sdpa takes the boolean mask; other attention kernels add it to their scores."""
        if self.model.config._attn_implementation == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=self.dtype, device=self.device).masked_fill(~allowed, torch.finfo(self.dtype).min)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Slots, last: torch.Tensor | None,
                head: bool = True) -> torch.Tensor:
        """Logits at column `last` of each row of `ids` [batch, tokens] ([batch, vocab]), or at every
        column when `last` is None ([batch, tokens, vocab]); `mask` is [batch, 1, tokens, width],
        True where a token may attend. Without `head`, the final hidden states instead of logits."""
        hidden = self.inner.embed_tokens(ids)
        embeddings = self.inner.rotary_emb(hidden, positions)
        for layer in self.inner.layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=embeddings, **{self.cache_kwarg: cache})
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        if last is not None:
            hidden = hidden[torch.arange(len(ids), device=ids.device), last]
        hidden = self.inner.norm(hidden)
        return self.head(hidden) if head else hidden

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits [..., vocab] from final hidden states [..., hidden_size]. For rows of states
        the product is taken as W x^T, transposed back: the same sums, which the CPU's matmul runs
        faster in that orientation when there are few rows (64 x 576 x 49,152: 125 against 103
        GFLOP/s here, 62 against 109 ms on the AVX2 kind; benchmarks/roofline.py)."""
        lm_head = self.model.lm_head
        if hidden.dim() == 2 and type(lm_head) is torch.nn.Linear and lm_head.bias is None:
            return torch.mm(lm_head.weight, hidden.t()).t().float()
        return lm_head(hidden).float()

    def prefill(self, rows: list[list[int]], prefix: tuple[Slots, list[int], list[int]] | None = None,
                every: bool = False, head: bool = True) -> tuple[Slots, torch.Tensor]:
        """Prefill `rows` into new `Slots`; returns them and the logits after each row (with `every`,
        after each of its tokens; without `head`, the hidden states there). With `prefix` = (slots, owners, starts), row b continues the first
        starts[b] tokens held in slot owners[b], whose keys/values are copied, not recomputed; or with
        prefix = (sources, None, starts), those of sources[b], a (keys, values) pair of per-layer
        [kv_heads, columns, head_dim] tensors (None for a row with no beginning held)."""
        starts = prefix[2] if prefix else [0] * len(rows)
        n = max(len(r) for r in rows)
        width = max(s + len(r) for s, r in zip(starts, rows))
        cache = Slots(self.model.config, len(rows), width + 1, self.dtype, self.device)  # + a column for padding
        if prefix and max(starts) and isinstance(prefix[0], Slots):
            held, owners = prefix[0], torch.tensor(prefix[1], device=self.device)
            copied = min(max(starts), held.keys[0].shape[2])  # (columns past a row's start are overwritten or masked)
            for mine, theirs in zip(cache.keys + cache.values, held.keys + held.values):
                mine[:, :, :copied] = theirs[owners, :, :copied]
        elif prefix and max(starts):
            for b, (source, start) in enumerate(zip(prefix[0], starts)):
                for mine, theirs in zip(cache.keys + cache.values, source[0] + source[1] if start else []):
                    mine[b, :, :start] = theirs[:, :start]
        ids = torch.tensor([r + [0] * (n - len(r)) for r in rows], device=self.device)
        first = torch.tensor(starts, device=self.device).unsqueeze(1)
        ends = first + torch.tensor([len(r) for r in rows], device=self.device).unsqueeze(1)
        columns = first + torch.arange(n, device=self.device)
        columns = columns.masked_fill(columns >= ends, width)  # padding goes to the last column, never read
        keys = torch.arange(width, device=self.device)
        # the token at column q of row b sees key column c when c <= q and c holds one of b's tokens
        mask = (keys <= columns.unsqueeze(-1)) & (keys < ends.unsqueeze(-1))
        if not max(starts) and self.model.config._attn_implementation == "sdpa":
            # every row starts at column 0, where plain causal attention is that mask for every token
            # read (a padding token's own output is never read): sdpa's causal kernel, without a mask
            mask = None
        cache.aim(columns, width)
        last = None if every else (ends - first - 1).squeeze(1)
        return cache, self.forward(ids, columns, None if mask is None else self._mask(mask.unsqueeze(1)), cache, last, head)

    @torch.inference_mode()
    def score(self, prompts: list[list[int]], choices: list[list[list[int]]], batch: int) -> list[list[float]]:
        """Summed log-probability of each choice's tokens after its prompt, `batch` prompts at a time
        (see choice_logprobs)."""
        out: list[list[float]] = [[] for _ in prompts]
        for i, _, c, first, logp in self.choice_logprobs(prompts, choices, batch):
            out[i].append(float(first[c[0]] + sum(logp[j - 1, c[j]] for j in range(1, len(c)))))
        return out

    def choice_logprobs(self, prompts: list[list[int]], choices: list[list[list[int]]], batch: int):
        """Yields (prompt i, choice j, its tokens, log-probs before its first token [vocab], log-probs
        after each of its tokens [tokens, vocab]) for every choice. Prompts are taken in sorted order
        so that those sharing a beginning (one conversation asked in both option orders, or under
        several principles) meet in a batch, where that beginning is prefilled once; each prompt is
        prefilled once for all its choices."""
        for part, cache, after in self.prefilled(prompts, batch):
            flat = [(b, j, c) for b, i in enumerate(part) for j, c in enumerate(choices[i])]
            tails = [c[:-1] or c[:1] for _, _, c in flat]  # a choice's last token predicts nothing we need
            _, logits = self.prefill(tails, (cache, [b for b, _, _ in flat], [len(prompts[part[b]]) for b, _, _ in flat]), every=True)
            logp = logits.log_softmax(-1)
            first = after.log_softmax(-1)
            for k, (b, j, c) in enumerate(flat):
                yield part[b], j, c, first[b], logp[k]

    def prefilled(self, rows: list[list[int]], batch: int, head: bool = True, budget: int = 8192):
        """Yields (indices of a batch of rows, their cache, the logits after each; without `head`, the
        final hidden states there) for every row. Rows are taken in sorted order, at most 4 x `batch`
        rows and `budget` tokens at a time: the beginnings neighbours share are prefilled once, then
        both those beginnings and the rest go through the model at most `batch` rows at a time, by
        length, so that little is padded (`length_batches`)."""
        order = sorted(range(len(rows)), key=lambda i: rows[i])
        at = 0
        while at < len(order):
            end, tokens = at, 0
            while end < len(order) and end - at < 4 * batch and (end == at or tokens + len(rows[order[end]]) <= budget):
                tokens += len(rows[order[end]])
                end += 1
            part = order[at:end]
            mine = [rows[i] for i in part]
            heads, owners, starts = groups(mine) if self.share_prefixes else ([], [0] * len(mine), [0] * len(mine))
            held = self._prefilled_apart(heads, batch) if heads else None
            for ks in length_batches([len(r) - s for r, s in zip(mine, starts)], batch):
                prefix = (held, [owners[k] for k in ks], [starts[k] for k in ks]) if held else None
                cache, after = self.prefill([mine[k][starts[k] :] for k in ks], prefix, head=head)
                yield [part[k] for k in ks], cache, after
            at = end

    @torch.inference_mode()
    def final_states(self, rows: list[list[int]], batch: int) -> torch.Tensor:
        """The final hidden state after each row's last token [rows, hidden] (what a sequence-
        classification head reads), batched as `prefilled` does."""
        out: list = [None] * len(rows)
        for part, _, states in self.prefilled(rows, batch, head=False):
            for i, state in zip(part, states):
                out[i] = state
        return torch.stack(out)

    def _prefilled_apart(self, rows: list[list[int]], batch: int) -> Slots:
        """`rows` prefilled `batch` at a time, sorted by length, into one Slots (slot i: row i)."""
        held = Slots(self.model.config, len(rows), max(map(len, rows)), self.dtype, self.device)
        for part in length_batches([len(r) for r in rows], batch):
            cache, _ = self.prefill([rows[i] for i in part], head=False)
            width = max(len(rows[i]) for i in part)
            which = torch.tensor(part, device=self.device)
            for mine, theirs in zip(held.keys + held.values, cache.keys + cache.values):
                mine[which, :, :width] = theirs[: len(part), :, :width]
        return held

    @torch.inference_mode()
    def prompt_logprobs(self, rows: list[list[int]], top: int, batch: int, wanted: list[int] | None = None) -> list[list]:
        """For each token of each row, (its log-probability after the tokens before it, the `top`
        likeliest tokens there as {id: logprob} or None); (None, None) for the first token and for
        those before `wanted[i]`, which are not computed. Rows are taken in sorted order, so rows
        sharing a beginning (one prompt with each of its choices appended, a conversation asked in
        both orders) have it prefilled once and its log-probs computed once; the LM head runs only
        where a log-prob is wanted, over all rows of a batch together."""
        wanted = wanted or [1] * len(rows)
        if all(0 < w < len(r) and len(r) - w <= SHORT for r, w in zip(rows, wanted)):
            return self._tail_logprobs(rows, top, batch, wanted)
        out: list[list] = [[] for _ in rows]
        order = sorted(range(len(rows)), key=lambda i: rows[i])
        for at in range(0, len(order), batch):
            part = order[at : at + batch]
            mine = [rows[i] for i in part]
            heads, owners, starts = groups(mine) if self.share_prefixes else ([], [], [0] * len(mine))
            held, head_states = self.prefill(heads, every=True, head=False) if heads else (None, None)
            _, states = self.prefill([r[s:] for r, s in zip(mine, starts)], (held, owners, starts) if heads else None,
                                     every=True, head=False)
            states_at, targets, where, shared = [], [], [], {}  # one entry per log-prob computed
            for b, (row, s) in enumerate(zip(mine, starts)):
                first, mine_at = max(wanted[part[b]], 1), []
                for k in range(first, len(row)):  # the state at position k - 1 predicts token k
                    if k < s and (owners[b], k) in shared:  # inside a shared head: computed once
                        mine_at.append(shared[owners[b], k])
                        continue
                    if k < s:
                        shared[owners[b], k] = len(targets)
                    states_at.append(head_states[owners[b], k - 1] if k <= s else states[b, k - 1 - s])
                    mine_at.append(len(targets))
                    targets.append(row[k])
                where.append((first, mine_at))
            found = self.log_softmax_at(torch.stack(states_at), targets, top) if targets else []
            for b, (first, mine_at) in enumerate(where):
                out[part[b]] = [(None, None)] * first + [found[j] for j in mine_at]
        return out

    def _tail_logprobs(self, rows: list[list[int]], top: int, batch: int, wanted: list[int]) -> list[list]:
        """prompt_logprobs where each row is a prompt (its first wanted[i] tokens) and a short choice:
        rows of one prompt are scored as its choices, each prompt prefilled once (choice_logprobs)."""
        prompts: dict[tuple, list[int]] = {}  # prompt -> its rows
        for i, (r, w) in enumerate(zip(rows, wanted)):
            prompts.setdefault(tuple(r[:w]), []).append(i)
        keys = list(prompts)
        out: list[list] = [[] for _ in rows]
        choices = [[rows[i][len(k):] for i in prompts[k]] for k in keys]
        for p, j, c, first, logp in self.choice_logprobs([list(k) for k in keys], choices, batch):
            dists = torch.cat([first.unsqueeze(0), logp[: len(c) - 1]])
            picked = dists.gather(-1, torch.tensor(c, device=dists.device).unsqueeze(-1)).squeeze(-1).tolist()
            i = prompts[keys[p]][j]
            out[i] = [(None, None)] * wanted[i] + list(zip(picked, likeliest(dists, top) if top else [None] * len(c)))
        return out

    @torch.inference_mode()
    def next_logprobs(self, rows: list[list[int]], top: int, batch: int, extra: list[list[int]] | None = None) -> list[dict[int, float]]:
        """The `top` likeliest next tokens after each row, {id: logprob} from the likeliest down, then
        those of row i's `extra[i]` tokens; rows sharing a beginning have it prefilled once."""
        out: list[dict] = [{} for _ in rows]
        for part, _, after in self.prefilled(rows, batch):
            logp = after.log_softmax(-1)
            for b, (i, found) in enumerate(zip(part, likeliest(logp, top))):
                out[i] = {**found, **{t: float(logp[b, t]) for t in (extra[i] if extra else [])}}
        return out

    def log_softmax_at(self, states: torch.Tensor, targets: list[int], top: int, chunk: int = 512) -> list[tuple]:
        """(log-prob of each target, its `top` likeliest tokens as {id: logprob} or None) from the
        hidden state that predicts it, `chunk` states through the LM head at a time."""
        found = []
        for at in range(0, len(targets), chunk):
            logp = self.head(states[at : at + chunk]).log_softmax(-1)
            picked = logp.gather(-1, torch.tensor(targets[at : at + chunk], device=self.device).unsqueeze(-1)).squeeze(-1).tolist()
            found += zip(picked, likeliest(logp, top) if top else [None] * len(picked))
        return found

    def step(self, cache: Slots, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One decode step for slots [0, len(tokens)): each slot's latest token goes to column
        `lengths` (the tokens it holds so far)."""
        width = int(lengths.max()) + 1
        mask = torch.arange(width, device=self.device) <= lengths.unsqueeze(1)
        cache.aim(lengths.unsqueeze(1), width)
        return self.forward(tokens.unsqueeze(1), lengths.unsqueeze(1), self._mask(mask.view(len(tokens), 1, 1, width)), cache,
                            torch.zeros_like(lengths))

    def _beginnings(self, rows: list[list[int]]) -> tuple[list, list[int]]:
        """For sorted `rows`, what each continues without recomputing: (sources, starts), where row b's
        first starts[b] tokens come from sources[b], a (keys, values) pair of per-layer tensors: kept
        from an earlier call (`keep`), or a beginning it shares with its neighbours, prefilled once
        here; (None, 0) for a row that starts from nothing."""
        sources: list = [None] * len(rows)
        starts = [0] * len(rows)
        if self.kept is not None:
            for b, row in enumerate(rows):
                found, length = self.kept.find(row)
                if length >= MIN_PREFIX:
                    sources[b], starts[b] = found, length
        apart = [b for b in range(len(rows)) if not starts[b]]
        if self.share_prefixes and apart:
            heads, owners, shared = groups([rows[b] for b in apart])
            held = self.prefill(heads, head=False)[0] if heads else None
            for b, owner, start in zip(apart, owners, shared):
                if start:
                    sources[b] = ([k[owner] for k in held.keys], [v[owner] for v in held.values])
                    starts[b] = start
        return sources, starts

    def keep(self, budget: int) -> None:
        """Keep the keys and values of the sequences `run` finishes, up to `budget` bytes, for later
        prompts that continue them (0: keep none, and drop what is kept). Only for a model whose
        weights do not change meanwhile."""
        self.kept = Kept(budget) if budget > 0 else None

    @torch.inference_mode()
    def run(self, rows: list, slots: int, pick, done) -> list[list[int]]:
        """Generate for `rows` (each with `ids` and `params`), up to `slots` at a time, in sorted
        order, so that prompts sharing a beginning (a few-shot block, a system prompt) run together
        after that beginning is prefilled once. `pick(logits, indices)` gives the next token of each
        listed row; `done(index, tokens)` says whether a row has finished with these tokens."""
        order = sorted(range(len(rows)), key=lambda i: rows[i].ids)
        waiting = deque(zip(order, *self._beginnings([rows[i].ids for i in order])))
        length = max(len(r.ids) + r.params.max_new_tokens for r in rows)
        cache = Slots(self.model.config, min(slots, len(rows)), length, self.dtype, self.device)
        out: list[list[int]] = [[] for _ in rows]
        where: list[int] = []  # the row in each used slot
        lengths = torch.zeros(cache.keys[0].shape[0], dtype=torch.long, device=self.device)
        last = torch.zeros_like(lengths)
        while waiting or where:
            free = len(lengths) - len(where)
            if waiting and free >= min(len(waiting), max(1, len(lengths) // 4)):
                new, source, start = zip(*[waiting.popleft() for _ in range(min(free, len(waiting)))])
                fresh, logits = self.prefill([rows[i].ids[s:] for i, s in zip(new, start)], (source, None, start))
                new = list(new)
                first = len(where)
                cache.put(fresh, first, fresh.keys[0].shape[2])
                lengths[first : first + len(new)] = torch.tensor([len(rows[i].ids) for i in new])
                where += new
                batch = range(first, len(where))
            else:
                used = len(where)
                logits = self.step(cache, last[:used], lengths[:used])
                lengths[:used] += 1
                batch = range(used)
            tokens = pick(logits, [where[s] for s in batch])
            finished = []
            for s, token in zip(batch, tokens):
                out[where[s]].append(token)
                last[s] = token
                if done(where[s], out[where[s]]):
                    finished.append(s)
                    if self.kept is not None:  # its prompt and all but the last token, whose keys are not computed
                        held = int(lengths[s])
                        self.kept.add((rows[where[s]].ids + out[where[s]])[:held],
                                      [k[s, :, :held].clone() for k in cache.keys], [v[s, :, :held].clone() for v in cache.values])
            for s in reversed(finished):  # the last used slot moves into the freed one
                end = len(where) - 1
                if s != end:
                    cache.move(end, s, int(lengths[end]))
                    lengths[s], last[s], where[s] = lengths[end], last[end], where[end]
                where.pop()
        return out


def likeliest(logp: torch.Tensor, top: int) -> list[dict[int, float]]:
    """Each row's `top` likeliest tokens of log-probs [rows, vocab], {id: logprob} from the top down."""
    values, which = logp.topk(top, dim=-1)
    return [dict(zip(w, v)) for w, v in zip(which.tolist(), values.tolist())]
