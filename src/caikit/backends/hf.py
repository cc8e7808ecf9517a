"""The transformers backend: batched generation and choice scoring with a Hugging Face causal LM.

Generation runs on the lean engine of `caikit.backends.decode` (static KV slots refilled as sequences
end, a shared prefix prefilled once) for models it computes exactly, checked when the model loads;
other models run a plain decode loop over left-padded batches. Prompts go longest first, so memory
trouble shows up at once. Each sampled sequence has its own random generator, seeded from the seed,
its prompt's token ids and its sample index: a run is repeatable for the same seed whatever the batch
size or the batch's other prompts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from caikit import models
from caikit.backends import decode, sampling
from caikit.backends.protocol import Prompt, SamplingParams, choices_per_prompt, cut_at_stop, encode, render


@dataclass(frozen=True)
class Row:
    """One sequence to generate: prompt token ids, sampling settings, and which sample of the prompt it is."""

    ids: list[int]
    params: SamplingParams
    sample: int = 0

    def generator(self, device: str):
        if self.params.temperature == 0:
            return None
        key = hashlib.blake2b(f"{self.params.seed}:{self.sample}:{self.ids}".encode(), digest_size=8).digest()
        return torch.Generator(device=device).manual_seed(int.from_bytes(key, "little") >> 1)


@dataclass(frozen=True)
class Generated:
    text: str
    tokens: int  # generated tokens, counting the end-of-sequence token
    finish: str  # "stop" (end of sequence or a stop string) or "length"


class TransformersBackend:
    name = "transformers"

    def __init__(self, loaded: models.LoadedModel, batch_size: int = 16, engine: str = "auto"):
        self.loaded = loaded
        self.model = loaded.spec
        self.batch_size = batch_size
        self.generated_tokens = 0
        self.prompt_tokens = 0  # prompt (prefill) tokens processed, for cost reports
        self._hf = loaded.model
        self._tok = loaded.tokenizer
        eos = self._hf.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self._eos = {t for t in eos + [self._tok.eos_token_id] if t is not None}
        self._cache_kwarg = decode.cache_kwarg(self._hf.forward)
        lean = decode.Engine(self._hf) if engine != "plain" else None
        self._engine = lean if lean is not None and lean.agrees() else None
        self.engine = "lean" if self._engine else "plain"

    @property
    def tokenizer(self):
        return self._tok

    @property
    def max_length(self) -> int | None:
        """The most tokens the model takes (its config's max_position_embeddings)."""
        return getattr(self._hf.config, "max_position_embeddings", None)

    @property
    def share_prefixes(self) -> bool:
        """Whether the lean engine prefills a beginning that neighbouring prompts share once (on; off
        only to measure what sharing saves)."""
        return self._engine is not None and self._engine.share_prefixes

    @share_prefixes.setter
    def share_prefixes(self, value: bool) -> None:
        if self._engine is not None:
            self._engine.share_prefixes = value

    def keep_prefixes(self, budget: int = 2**30) -> None:
        """Keep the keys and values of finished generations (up to `budget` bytes; 0 drops them) for
        later prompts that continue them, as each round of `revise` continues the last: their
        beginnings are copied instead of prefilled again. The lean engine only; the weights must not
        change meanwhile."""
        if self._engine is not None:
            self._engine.keep(budget)

    @classmethod
    def load(
        cls,
        model: str = models.DEFAULT_MODEL,
        *,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 16,
        chat_template: Path | None = None,
    ) -> "TransformersBackend":
        return cls(models.load(model, dtype=dtype, device=device, chat_template=chat_template), batch_size)

    # -- prompts -> token ids -------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The text the model sees for `prompt` (chat template applied to conversations)."""
        return render(self._tok, prompt)

    def encode(self, prompt: Prompt) -> list[int]:
        return encode(self._tok, prompt)

    def _batches(self, encoded: list[list[int]]):
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _left_padded(self, rows: list[list[int]]):
        width = max(len(r) for r in rows)
        pad = self._tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return ids.to(self.loaded.device), mask.to(self.loaded.device)

    # -- generation -----------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[str]:
        encoded = [self.encode(p) for p in prompts]
        rows = [Row(ids, params, j) for ids in encoded for j in range(params.n)]
        return self.generate_rows(rows)

    def generate_rows(self, rows: Sequence["Row"], details: bool = False) -> list:
        """Generate each row (prompt ids, its own sampling settings); rows are batched by length.
        Each sampled row draws from its own generator, seeded from (seed, prompt ids, sample index),
        so a row's text does not depend on what it was batched with, here or in `caikit serve`.
        Gives texts, or with `details` `Generated` (text, tokens, finish reason) records."""
        self.prompt_tokens += sum(len(r.ids) for r in rows)
        if self._engine is not None:
            found = self._engine.run(rows, self.batch_size, *self._policy(rows))
        else:
            found = [None] * len(rows)
            for indices in self._batches([r.ids for r in rows]):
                for i, tokens in zip(indices, self._decode([rows[i] for i in indices])):
                    found[i] = tokens
        out = [self._finish(tokens, row.params.stop) for tokens, row in zip(found, rows)]
        return out if details else [g.text for g in out]

    def _sampling(self, rows: Sequence["Row"]):
        """Each row's generator (None when greedy), temperature and top-p, for `decode.sample`."""
        device = self.loaded.device
        return ([r.generator(device) for r in rows], torch.tensor([r.params.temperature or 1.0 for r in rows], device=device),
                torch.tensor([r.params.top_p for r in rows], device=device))

    def _policy(self, rows: Sequence["Row"]):
        """The lean engine's `pick` and `done` for these rows."""
        device = self.loaded.device
        generators, temperature, top_p = self._sampling(rows)

        def pick(logits, indices):
            index = torch.tensor(indices, device=device)
            return sampling.sample(logits, temperature[index], top_p[index], [generators[i] for i in indices])

        def done(i, tokens):
            return tokens[-1] in self._eos or len(tokens) >= rows[i].params.max_new_tokens or self._stopped(tokens, rows[i])

        return pick, done

    def _decode(self, rows: list["Row"]) -> list[list[int]]:
        """A plain decode loop over one left-padded batch: prefill, then one token per step for the
        rows still running (finished rows leave the batch and its KV cache)."""
        device = self.loaded.device
        ids, mask = self._left_padded([r.ids for r in rows])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        live = list(range(len(rows)))
        out: list[list[int]] = [[] for _ in rows]
        generators, temperature, top_p = self._sampling(rows)
        cache, step = None, 0
        with torch.inference_mode():
            while live:
                extra = {self._cache_kwarg: cache} if cache is not None else {}
                result = self._hf(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                  logits_to_keep=1, **extra)
                cache = decode.returned_cache(result)
                logits = result.logits[:, -1, :].float()
                chosen = sampling.sample(logits, temperature, top_p, [generators[r] for r in live])
                step += 1
                keep = []
                for k, (r, token) in enumerate(zip(live, chosen)):
                    out[r].append(token)
                    if not (token in self._eos or step >= rows[r].params.max_new_tokens or self._stopped(out[r], rows[r])):
                        keep.append(k)
                if len(keep) < len(live):
                    if not keep:
                        break
                    index = torch.tensor(keep, device=device)
                    cache.reorder_cache(index)
                    mask, positions, temperature, top_p = mask[index], positions[index], temperature[index], top_p[index]
                    chosen = [chosen[k] for k in keep]
                    live = [live[k] for k in keep]
                ids = torch.tensor(chosen, device=device).unsqueeze(1)
                mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
                positions = positions[:, -1:] + 1
        return out

    def _stopped(self, tokens: list[int], row: "Row") -> bool:
        """Whether a stop string ends the text; only the last tokens are decoded, as many as the
        longest stop string has characters (a token holds at least one), plus a few."""
        if not row.params.stop:
            return False
        text = self._tok.decode(tokens[-(max(len(s) for s in row.params.stop) + 4):], skip_special_tokens=True)
        return any(s in text for s in row.params.stop)

    def _finish(self, row: list[int], stop: Sequence[str]) -> "Generated":
        """Cut a generated row at its end-of-sequence token and at the first stop string."""
        end = next((k for k, t in enumerate(row) if t in self._eos), len(row))
        tokens = min(end + 1, len(row))
        self.generated_tokens += tokens
        text = self._tok.decode(row[:end], skip_special_tokens=True)
        text, stopped = cut_at_stop(text, stop)
        return Generated(text.strip(), tokens, "stop" if stopped or end < len(row) else "length")

    def prompt_logprobs(self, rows: list[list[int]], top: int = 0, wanted: list[int] | None = None) -> list[list]:
        """For each token of each row, its log-probability after the tokens before it (None for the
        first) and, with `top`, the `top` most likely tokens there as {token id: logprob}; with
        `wanted`, row i's tokens before wanted[i] may be left (None, None). The lean engine prefills
        a beginning shared by neighbouring rows once; the plain loop runs rows in batches whose logits
        stay under about 1 GB."""
        self.prompt_tokens += sum(len(r) for r in rows)
        if self._engine is not None:
            return self._engine.prompt_logprobs(rows, top, self.batch_size, wanted)
        out: list[list] = [[] for _ in rows]
        vocab = self._hf.config.vocab_size
        for indices in self._batches(rows):
            width = max(len(rows[i]) for i in indices)
            step = max(1, int(1e9 // (width * vocab * 4)))
            for start in range(0, len(indices), step):
                part = indices[start : start + step]
                for i, found in zip(part, self._prompt_logprobs([rows[i] for i in part], top)):
                    out[i] = found
        return out

    def next_logprobs(self, rows: list[list[int]], top: int, extra: list[list[int]] | None = None) -> list[dict[int, float]]:
        """The `top` likeliest tokens after each row, {token id: logprob} from the likeliest down,
        then those of row i's `extra[i]` tokens."""
        self.prompt_tokens += sum(len(r) for r in rows)
        if self._engine is not None:
            return self._engine.next_logprobs(rows, top, self.batch_size, extra)
        out: list[dict] = [{} for _ in rows]
        for indices in self._batches(rows):
            ids, mask = self._left_padded([rows[i] for i in indices])
            with torch.inference_mode():
                logits = self._hf(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                  logits_to_keep=1).logits[:, -1].float()
            logp = logits.log_softmax(-1)
            for b, (i, found) in enumerate(zip(indices, decode.likeliest(logp, top))):
                out[i] = {**found, **{t: float(logp[b, t]) for t in (extra[i] if extra else [])}}
        return out

    def _prompt_logprobs(self, rows: list[list[int]], top: int) -> list[list]:
        ids, mask = self._left_padded(rows)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self._hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        found = []
        for b, row in enumerate(rows):
            pad = ids.shape[1] - len(row)
            logp = logits[b, pad:-1].float().log_softmax(-1)
            picked = logp.gather(-1, ids[b, pad + 1 :].unsqueeze(-1)).squeeze(-1).tolist()
            tops = decode.likeliest(logp, top) if top else [None] * len(picked)
            found.append([(None, None)] + list(zip(picked, tops)))
        return found

    # -- scoring --------------------------------------------------------------------------------

    def score_choices(
        self, prompts: Sequence[Prompt], choices: Sequence[str] | Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """Summed log-probability of each choice's tokens after its prompt.

        Each prompt is prefilled once; its KV cache is repeated for its choices, which run in one
        more forward pass (the lean engine also prefills a beginning shared by neighbouring prompts once). Choices are tokenized on their own (no special tokens), so write them with
        their leading space (" (A)"), as they would follow the prompt.
        """
        per_prompt = choices_per_prompt(prompts, choices)
        encoded = [self.encode(p) for p in prompts]
        choice_ids = [[self._tok(c, add_special_tokens=False)["input_ids"] for c in cs] for cs in per_prompt]
        self.prompt_tokens += sum(len(e) for e in encoded) + sum(len(c) for cs in choice_ids for c in cs)
        if any(len(c) == 0 for cs in choice_ids for c in cs):
            raise ValueError("score_choices: a choice is empty after tokenization")
        if self._engine is not None:
            return self._engine.score(encoded, choice_ids, self.batch_size)
        scores: list[list[float]] = [[] for _ in prompts]
        for indices in self._batches(encoded):
            for i, row in zip(indices, self._score_batch([encoded[i] for i in indices], [choice_ids[i] for i in indices])):
                scores[i] = row
        return scores

    def _score_batch(self, prompts: list[list[int]], choices: list[list[list[int]]]) -> list[list[float]]:
        device = self.loaded.device
        ids, mask = self._left_padded(prompts)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            first = self._hf(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
            # One continuation row per (prompt, choice); the cache is repeated to match.
            owner = [b for b, cs in enumerate(choices) for _ in cs]
            flat = [c for cs in choices for c in cs]
            width = max(len(c) for c in flat)
            pad = self._tok.pad_token_id
            cont = torch.tensor([c + [pad] * (width - len(c)) for c in flat], device=device)
            cont_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in flat], device=device)
            index = torch.tensor(owner, device=device)
            cache = decode.returned_cache(first)
            cache.reorder_cache(index)
            start = mask.sum(-1)[index].unsqueeze(1)
            logits = self._hf(
                input_ids=cont,
                attention_mask=torch.cat([mask[index], cont_mask], dim=1),
                position_ids=start + torch.arange(width, device=device),
                use_cache=True,
                **{self._cache_kwarg: cache},
            ).logits
            # Token j of a choice is predicted by the prompt's last position (j = 0) or choice position j-1.
            predicting = torch.cat([first.logits[index, -1:, :], logits[:, :-1, :]], dim=1).float()
            logp = predicting.log_softmax(-1).gather(-1, cont.unsqueeze(-1)).squeeze(-1)
            totals = (logp * cont_mask).sum(-1).tolist()
        out: list[list[float]] = [[] for _ in prompts]
        for b, total in zip(owner, totals):
            out[b].append(total)
        return out
