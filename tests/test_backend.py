import pytest
import torch

from caikit.backends import SamplingParams
from caikit.errors import CaikitError

CONVERSATIONS = [
    [{"role": "user", "content": "How do I make a simple tomato sauce from scratch?"}],
    [{"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is an index fund and how does it work?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "How do I teach my dog to sit?"}],
]


def full_sequence_logprob(backend, prompt, choice):
    """Hand computation: log-softmax over the whole prompt+choice sequence, no cache, no batching."""
    tok = backend.loaded.tokenizer
    prompt_ids = backend.encode(prompt)
    choice_ids = tok(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + choice_ids])
    with torch.no_grad():
        logp = backend.loaded.model(ids).logits[0].log_softmax(-1)
    return sum(logp[len(prompt_ids) - 1 + j, t].item() for j, t in enumerate(choice_ids))


def test_score_choices_equals_hand_computed_log_softmax(tiny_backend):
    prompts = CONVERSATIONS + ["The answer is:", "Human: pick one\n\nAssistant: The answer is:"]
    choices = [" (A)", " (B)", " a much longer answer choice"]
    scores = tiny_backend.score_choices(prompts, choices)
    assert len(scores) == len(prompts) and all(len(row) == 3 for row in scores)
    for prompt, row in zip(prompts, scores):
        for choice, score in zip(choices, row):
            assert score == pytest.approx(full_sequence_logprob(tiny_backend, prompt, choice), abs=1e-4)


def test_score_choices_per_prompt_choices_and_batch_invariance(tiny_backend):
    prompts = CONVERSATIONS[:3]
    choices = [[" yes", " no"], [" (A)", " (B)", " (C)"], [" one"]]
    batched = tiny_backend.score_choices(prompts, choices)
    single = [tiny_backend.score_choices([p], [c])[0] for p, c in zip(prompts, choices)]
    assert [len(r) for r in batched] == [2, 3, 1]
    for a, b in zip(batched, single):
        assert a == pytest.approx(b, abs=1e-4)


def test_score_choices_continues_a_final_assistant_message(tiny_backend):
    prefilled = [{"role": "user", "content": "Pick one."}, {"role": "assistant", "content": "The answer is:"}]
    text = tiny_backend.render(prefilled)
    assert text.endswith("<|im_start|>assistant\nThe answer is:")
    [[score]] = tiny_backend.score_choices([prefilled], [" (A)"])
    assert score == pytest.approx(full_sequence_logprob(tiny_backend, text, " (A)"), abs=1e-4)


def test_greedy_generation_does_not_depend_on_batching(tiny_backend):
    greedy = SamplingParams(max_new_tokens=12, temperature=0)
    batched = tiny_backend.generate(CONVERSATIONS, greedy)
    alone = [tiny_backend.generate([c], greedy)[0] for c in CONVERSATIONS]
    assert batched == alone  # left padding and the attention mask are right
    assert all(isinstance(t, str) for t in batched)


def test_sampling_is_repeatable_for_a_seed(tiny_backend):
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=7)
    first = tiny_backend.generate(CONVERSATIONS, params)
    assert tiny_backend.generate(CONVERSATIONS, params) == first
    other = tiny_backend.generate(CONVERSATIONS, SamplingParams(max_new_tokens=16, temperature=1.0, seed=8))
    assert other != first


def test_n_samples_per_prompt_are_prompt_major(tiny_backend):
    """out[i * n + j] is sample j of prompt i: each sample is seeded by (seed, prompt, sample index), so
    the pair's samples are each prompt's own samples, prompt after prompt."""
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=1)
    out = tiny_backend.generate(CONVERSATIONS[:2], params)
    alone = [tiny_backend.generate([c], params) for c in CONVERSATIONS[:2]]
    assert len(set(alone[0])) == 3 and not set(alone[0]) & set(alone[1]), "the order must show: samples all differ"
    assert out == alone[0] + alone[1]


def test_stop_strings_cut_the_text(tiny_backend):
    greedy = SamplingParams(max_new_tokens=24, temperature=0)
    [text] = tiny_backend.generate(CONVERSATIONS[:1], greedy)
    assert len(text) > 4, "the tiny model should say something"
    stop = text[3:5]
    [cut] = tiny_backend.generate(CONVERSATIONS[:1], SamplingParams(max_new_tokens=24, temperature=0, stop=(stop,)))
    assert cut == text[: text.find(stop)].strip()
    assert stop not in cut


def test_max_new_tokens_and_token_count(tiny_backend):
    before = tiny_backend.generated_tokens
    tiny_backend.generate(CONVERSATIONS[:2], SamplingParams(max_new_tokens=5, temperature=0))
    assert 2 <= tiny_backend.generated_tokens - before <= 10


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens=0: must be at least 1"),
        ({"temperature": -1}, "temperature=-1: must be 0"),
        ({"top_p": 0}, "top_p=0: must be in"),
        ({"n": 2, "temperature": 0}, "2 samples per prompt need a temperature above 0"),
    ],
)
def test_sampling_params_are_validated_by_their_own_field_names(kwargs, message):
    """The library names its fields; the command line names its flags (caikit.cli.app.FLAGS)."""
    from caikit.cli.app import FLAGS
    from caikit.errors import FieldError

    with pytest.raises(FieldError, match=message) as raised:
        SamplingParams(**kwargs)
    flag = FLAGS.get(raised.value.field, raised.value.field)
    assert str(raised.value.named(FLAGS)).startswith(f"{flag} {raised.value.value}: ")


def test_unknown_backend_is_a_clear_error():
    from caikit import backends

    with pytest.raises(CaikitError, match="--backend nope: unknown backend"):
        backends.build("nope", "smollm2-135m-instruct")


def test_greedy_decode_loop_matches_plain_generate(tiny_backend):
    import torch

    for conversation in CONVERSATIONS:
        ids = torch.tensor([tiny_backend.encode(conversation)])
        with torch.inference_mode():
            tokens = tiny_backend._hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                               do_sample=False, pad_token_id=tiny_backend._tok.pad_token_id)
        new = tokens[0, ids.shape[1]:].tolist()
        end = next((k for k, t in enumerate(new) if t in tiny_backend._eos), len(new))
        expected = tiny_backend._tok.decode(new[:end], skip_special_tokens=True).strip()
        assert tiny_backend.generate([conversation], SamplingParams(max_new_tokens=12, temperature=0)) == [expected]


def test_a_seeded_sample_does_not_depend_on_its_batch(tiny_backend):
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=3, n=2)
    together = tiny_backend.generate(CONVERSATIONS, params)
    alone = [s for c in CONVERSATIONS for s in tiny_backend.generate([c], params)]
    assert together == alone
    assert together[0] != together[1], "the two samples of a prompt draw from different generators"


def test_the_helpers_every_backend_shares():
    from caikit.backends.protocol import choices_per_prompt, continues_assistant, cut_at_stop

    assert choices_per_prompt(["p", "q"], [" (A)", " (B)"]) == [[" (A)", " (B)"]] * 2
    assert choices_per_prompt(["p", "q"], [["x"], ["y", "z"]]) == [["x"], ["y", "z"]]
    with pytest.raises(ValueError, match="one list of choices per prompt"):
        choices_per_prompt(["p", "q"], [["x"]])
    assert cut_at_stop("one. two\n\nHuman: three", ("\n\nHuman:", ".")) == ("one", True)
    assert cut_at_stop("no stop here", ("\n\nHuman:",)) == ("no stop here", False)
    assert continues_assistant([{"role": "user", "content": "q"}, {"role": "assistant", "content": "The answer is:"}])
    assert not continues_assistant([{"role": "user", "content": "q"}]) and not continues_assistant("plain") and not continues_assistant([])
