"""The lean decode engine computes what the plain loop computes: identical greedy and seeded samples
whatever the batch size (refilled slots), with a shared prefix prefilled once; logits equal to the
model's own forward; the sampler draws only from the exact nucleus."""

import pytest
import torch

from caikit import models
from caikit.backends import SamplingParams, decode, sampling
from caikit.backends import rows as batching
from caikit.backends.hf import TransformersBackend

SYSTEM = {"role": "system", "content": "You are a careful assistant. Answer the question below in one short sentence. " * 3}
QUESTIONS = [[{"role": "user", "content": f"Question {i}: how would you {verb} it? " * (1 + i % 3)}]
             for i, verb in enumerate(["fix", "break", "sell", "open", "hide", "paint", "lift"])]


@pytest.fixture(scope="module")
def engines(tiny_model):
    loaded = models.load(str(tiny_model), device="cpu")
    lean, plain = TransformersBackend(loaded), TransformersBackend(loaded, engine="plain")
    assert (lean.engine, plain.engine) == ("lean", "plain")
    return lean, plain


@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.parametrize("shared", [False, True])
def test_lean_engine_gives_the_plain_loops_texts(engines, batch_size, shared):
    lean, plain = engines
    prompts = [[SYSTEM] + q for q in QUESTIONS] if shared else QUESTIONS
    if shared:
        assert batching.common_prefix([lean.encode(p) for p in prompts]) >= batching.MIN_PREFIX
    lean.batch_size = plain.batch_size = batch_size
    for params in (SamplingParams(max_new_tokens=24, temperature=0),
                   SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.8, seed=1, n=2),
                   SamplingParams(max_new_tokens=24, temperature=0.7, top_p=1.0, seed=2, stop=("e",))):
        texts = lean.generate(prompts, params)
        assert texts == plain.generate(prompts, params)
        assert len(set(texts)) > 1


def test_kept_generations_are_continued_not_prefilled_again(tiny_model, monkeypatch):
    """With `keep_prefixes`, a prompt that continues an earlier generation (a conversation's next
    turn) copies that generation's keys and values: the same texts as the plain loop, and only the
    new turn goes through prefill."""
    loaded = models.load(str(tiny_model), device="cpu")
    lean, plain = TransformersBackend(loaded, batch_size=3), TransformersBackend(loaded, engine="plain")
    prefilled = []
    real = decode.Engine.prefill

    def counting(self, rows, *args, **kwargs):
        prefilled.append(sum(map(len, rows)))
        return real(self, rows, *args, **kwargs)

    monkeypatch.setattr(decode.Engine, "prefill", counting)
    greedy = SamplingParams(max_new_tokens=20, temperature=0)
    lean.keep_prefixes()
    first = lean.generate(QUESTIONS, greedy)
    assert first == plain.generate(QUESTIONS, greedy)
    turns = [q + [{"role": "assistant", "content": a}, {"role": "user", "content": "Say it again, shorter."}]
             for q, a in zip(QUESTIONS, first)]
    for params in (greedy, SamplingParams(max_new_tokens=20, temperature=1.0, top_p=0.9, seed=3)):
        prefilled.clear()
        assert lean.generate(turns, params) == plain.generate(turns, params)
        whole = sum(len(lean.encode(t)) for t in turns)
        asked = sum(len(lean.encode(q)) for q in QUESTIONS)  # (a random model's answers may tokenize otherwise when read back)
        assert sum(prefilled) <= whole - asked, (prefilled, whole, asked)
    lean.keep_prefixes(0)
    prefilled.clear()
    lean.generate(turns, greedy)
    assert sum(prefilled) == whole  # none kept: every token prefilled (these prompts share no beginning)


def test_kept_sequences_stay_within_their_budget_and_are_found_by_their_longest_beginning():
    from caikit.backends.slots import Kept

    def layers(n):  # one layer of keys and values, [kv_heads 1, n, head_dim 2] float32: 8 bytes a token each
        return [torch.full((1, n, 2), float(n))], [torch.zeros(1, n, 2)]

    kept = Kept(budget=16 * 120)  # 120 tokens
    a, b = list(range(50)), list(range(40)) + [99] * 10
    kept.add(a, *layers(50))
    kept.add(b, *layers(50))
    (keys, _), length = kept.find(list(range(45)) + [7])
    assert length == 45 and keys[0][0, 0, 0] == 50  # a's beginning, extended past the last whole block
    assert kept.find(a)[1] == 49  # a token is always left to prefill
    assert kept.find([5] * 40) == (None, 0)
    kept.add(list(range(1000, 1060)), *layers(60))  # over the budget: the least recently used (b) goes
    assert kept.used <= kept.budget and kept.find(b + [1])[1] == 40  # only what b shares with a
    assert kept.find(list(range(1000, 1060)))[1] == 59
    assert len(kept.entries) == 2


def test_lean_logits_equal_the_models_forward(engines):
    lean, _ = engines
    engine = lean._engine
    ids = [lean.encode(q) for q in QUESTIONS[:3]]
    with torch.inference_mode():
        _, logits = engine.prefill(ids)
        for row, found in zip(ids, logits):
            plain = lean._hf(input_ids=torch.tensor([row])).logits[0, -1]
            assert torch.allclose(found.log_softmax(-1), plain.log_softmax(-1), atol=1e-4)


def test_a_model_the_engine_does_not_compute_keeps_the_plain_loop(tiny_model, monkeypatch):
    monkeypatch.setattr(decode.Engine, "forward", lambda self, *a, **k: torch.zeros(1, 3))
    assert TransformersBackend(models.load(str(tiny_model), device="cpu")).engine == "plain"


def test_the_sampler_draws_only_from_the_nucleus():
    torch.manual_seed(0)
    logits = torch.randn(6, 300) * torch.tensor([0.1, 1, 3, 8, 1, 3]).unsqueeze(1)  # flat to peaked rows
    temperature = torch.ones(6)
    top_p = torch.tensor([0.9, 0.5, 0.95, 0.3, 1.0, 0.99])
    probs = logits.softmax(-1)
    allowed = []
    for row, p in zip(probs, top_p):
        values, order = row.sort(descending=True)
        allowed.append(set(order[(values.cumsum(0) - values) < p].tolist()))
    generators = [torch.Generator().manual_seed(k) for k in range(6)]
    seen = [set() for _ in range(6)]
    for _ in range(300):
        for k, token in enumerate(sampling.sample(logits, temperature, top_p, generators)):
            seen[k].add(token)
    for k in range(6):
        assert seen[k] <= allowed[k], k
    assert len(seen[0]) > 64  # the flat row's nucleus is larger than the top-64 fast path
    assert seen[3] == allowed[3] and len(seen[4]) > 100
    greedy = sampling.sample(logits, temperature, top_p, [None] * 6)
    assert greedy == logits.argmax(-1).tolist()


def test_the_sampler_picks_what_one_sort_per_row_picks():
    """Whichever top-k holds a row's nucleus (64, 2048 or the whole vocabulary), the token drawn is
    the one a full sort of that row gives for the same uniform draw."""
    torch.manual_seed(1)
    scales = torch.tensor([0.02, 0.3, 1, 3, 8, 1, 0.05, 2])  # flat rows need more than 2048 tokens
    logits = torch.randn(8, 6000) * scales.unsqueeze(1)
    temperature = torch.full((8,), 0.7)
    top_p = torch.tensor([0.95, 0.9, 0.95, 0.5, 0.99, 1.0, 0.3, 0.95])
    for seed in range(5):
        generators = [torch.Generator().manual_seed(100 * seed + k) for k in range(8)]
        copies = [torch.Generator().manual_seed(100 * seed + k) for k in range(8)]
        got = sampling.sample(logits, temperature, top_p, generators)
        for k, row in enumerate((logits / 0.7).softmax(-1)):
            u = torch.rand(1, generator=copies[k]).item()
            values, order = (row, torch.arange(len(row))) if top_p[k] >= 1 else row.sort(descending=True)
            if top_p[k] < 1:
                values = values.masked_fill(values.cumsum(0) - values >= top_p[k], 0.0)
            cumulative = values.cumsum(0)
            j = int(torch.searchsorted(cumulative, u * cumulative[-1], right=True))
            assert got[k] == int(order[j]), (seed, k)


def test_lean_choice_scores_equal_the_plain_ones(engines):
    from caikit import judge
    from caikit.constitution import Comparison

    lean, plain = engines
    principles = [Comparison("p1", "Which response is kinder?"), Comparison("p2", "Which response is more honest?")]
    prompts = [judge.conversation(q, "Sure, here is how.", "I would rather not.", p)
               for q in QUESTIONS for p in principles] + ["A plain string prompt"]
    heads, _, _ = batching.groups(sorted(lean.encode(p) for p in prompts))
    assert heads  # the two principles of a question share its beginning
    for batch_size in (1, 4, 32):
        lean.batch_size = plain.batch_size = batch_size
        uneven = [[" yes", " no thanks"] if k % 2 else [" a much longer answer than the other ones here"] for k in range(len(prompts))]
        for choices in (list(judge.CHOICES), [" yes", " no thanks"], uneven):
            found, expected = lean.score_choices(prompts, choices), plain.score_choices(prompts, choices)
            assert all(abs(a - b) < 1e-4 for fa, fb in zip(found, expected) for a, b in zip(fa, fb)), (found, expected)


@pytest.mark.parametrize("batch_size", [2, 16])
def test_lean_prompt_logprobs_equal_the_plain_ones(engines, batch_size):
    """What `caikit serve` answers to echo requests: the engine prefills a shared beginning once (one
    question with each of its choices appended) and computes each of its log-probs once."""
    lean, plain = engines
    rows = []
    for q in QUESTIONS[:4]:
        ids = lean.encode([SYSTEM] + q)
        rows += [ids + lean.tokenizer(c, add_special_tokens=False)["input_ids"] for c in (" (A)", " (B)")]
    assert batching.common_prefix(rows) >= batching.MIN_PREFIX
    lean.batch_size = plain.batch_size = batch_size
    for top in (0, 3):
        ours, theirs = lean.prompt_logprobs(rows, top), plain.prompt_logprobs(rows, top)
        for mine, want in zip(ours, theirs):
            assert len(mine) == len(want) and mine[0] == (None, None)
            assert [lp for lp, _ in mine[1:]] == pytest.approx([lp for lp, _ in want[1:]], abs=1e-4)
            if top:
                for (_, t), (_, w) in zip(mine[1:], want[1:]):  # (near-ties may swap places)
                    assert sorted(t.values()) == pytest.approx(sorted(w.values()), abs=1e-4)
    tails = lean.prompt_logprobs(rows, 0, wanted=[len(r) - 2 for r in rows])
    for row, tail, whole in zip(rows, tails, theirs):
        assert tail[: len(row) - 2] == [(None, None)] * (len(row) - 2)
        assert [lp for lp, _ in tail[-2:]] == pytest.approx([lp for lp, _ in whole[-2:]], abs=1e-4)


def test_runs_sharing_a_beginning_are_chosen_to_save_the_most_tokens():
    system = list(range(100, 120))  # 20 tokens every row shares
    shot_a, shot_b = list(range(200, 300)), list(range(300, 400))
    rows = sorted([system + shot_a + [k] for k in range(3)] + [system + shot_b + [k, 9] for k in range(2)] + [[1, 2, 3]])
    heads, owners, starts = batching.groups(rows)
    assert [len(h) for h in heads] == [120, 120]  # two few-shot runs, not one run of the system prompt
    assert starts == [0, 120, 120, 120, 120, 120] and owners[1] == owners[3] != owners[4] == owners[5]
    assert batching.groups([[1] * 40, [2] * 40]) == ([], [0, 0], [0, 0])


def test_half_precision_models_run_on_the_lean_engine(tiny_model):
    backend = TransformersBackend(models.load(str(tiny_model), device="cpu", dtype="bfloat16"))
    assert backend.engine == "lean"
    assert len(backend.generate(QUESTIONS[:2], SamplingParams(max_new_tokens=5, temperature=0))) == 2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_self_check_passes_the_engine_and_refuses_a_wrong_step(tiny_model, monkeypatch, dtype):
    """The decode step may match the model's cached step or its whole forward (they round apart in
    bfloat16 on some CPUs), but a step that computes something else matches neither."""
    engine = decode.Engine(models.load(str(tiny_model), device="cpu", dtype=dtype).model)
    assert engine.agrees()
    forward = decode.Engine.forward
    shifted = lambda self, ids, positions, *rest: forward(self, ids, positions + (ids.shape[1] == 1), *rest)  # noqa: E731
    monkeypatch.setattr(decode.Engine, "forward", shifted)  # the step's token one position too far
    assert not engine.agrees()
    step = decode.Engine.step
    monkeypatch.setattr(decode.Engine, "forward", forward)
    monkeypatch.setattr(decode.Engine, "step", lambda self, cache, tokens, lengths: step(self, cache, tokens + 1, lengths))
    assert not engine.agrees()


def test_a_model_without_llama_style_layers_is_refused_not_crashed_on():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=64))
    assert decode.Engine(gpt2).agrees() is False


def test_length_batches_bound_rows_tokens_and_padding():
    from caikit.backends.rows import length_batches

    lengths = [5, 300, 7, 6, 120, 118, 8, 512, 3000, 9, 119]
    found = length_batches(lengths, batch=4, tokens=1024)
    assert sorted(i for b in found for i in b) == list(range(len(lengths)))  # every row once
    for b in found:
        longest = max(lengths[i] for i in b)
        assert len(b) <= 4 and (len(b) == 1 or longest * len(b) <= 1024)
        assert longest * len(b) - sum(lengths[i] for i in b) <= max(0.1 * longest * len(b), 32)  # at most a tenth is padding, or 32 tokens
    assert [5, 6, 7, 8] in [[lengths[i] for i in b] for b in found]  # short rows padded rather than split
    assert [3000] in [[lengths[i] for i in b] for b in found]  # a row over the token cap goes alone
