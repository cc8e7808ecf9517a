"""The backend protocol: what a prompt is, the sampling parameters, and the two methods every backend
has (`generate`, `score_choices`; see `caikit.backends`), with the prompt rendering they share.
Backends import this module; the registry in `caikit.backends` imports the backends."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence, Union

from caikit.errors import FieldError

Message = dict
Prompt = Union[str, list]


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy decoding
    top_p: float = 0.95
    n: int = 1
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise FieldError("max_new_tokens", self.max_new_tokens, "must be at least 1")
        if not 0 <= self.temperature < float("inf"):  # (NaN fails too)
            raise FieldError("temperature", self.temperature, "must be 0 (greedy) or a positive number")
        if not 0 < self.top_p <= 1:
            raise FieldError("top_p", self.top_p, "must be in (0, 1]")
        if self.n < 1:
            raise FieldError("n", self.n, "need at least one sample per prompt")
        if self.n > 1 and self.temperature == 0:
            raise FieldError("temperature", self.temperature, f"{self.n} samples per prompt need a temperature above 0 (greedy gives identical samples)")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


class Backend(Protocol):
    name: str  # registry name, e.g. "transformers"
    model: str  # the model spec it was built from
    batch_size: int
    generated_tokens: int  # running count, for throughput reports
    # optional: `details`, a dict added to every record's provenance (the openai backend's endpoint and scoring method);
    # `keep_prefixes(budget)`, keep finished generations for prompts that continue them (budget 0: stop)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[str]: ...

    def score_choices(
        self, prompts: Sequence[Prompt], choices: Sequence[str] | Sequence[Sequence[str]]
    ) -> list[list[float]]: ...


def continues_assistant(prompt: Prompt) -> bool:
    """Whether `prompt` is a conversation ending with an assistant message, which every backend
    continues (the message is the beginning of the reply) instead of closing it."""
    return not isinstance(prompt, str) and bool(prompt) and prompt[-1].get("role") == "assistant"


def choices_per_prompt(prompts: Sequence[Prompt], choices) -> list[list[str]]:
    """`score_choices`' choices as one list per prompt: one list shared by every prompt, or one each."""
    per_prompt = [list(choices)] * len(prompts) if choices and isinstance(choices[0], str) else list(choices)
    if len(per_prompt) != len(prompts):
        raise ValueError("score_choices: need one list of choices per prompt")
    return per_prompt


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` cut before each stop string it holds, taken in turn, and whether it held any."""
    stopped = False
    for s in stop:
        at = text.find(s)
        if at != -1:
            text, stopped = text[:at], True
    return text, stopped


def render(tokenizer, prompt: Prompt) -> str:
    """The text a model sees for `prompt`: its chat template applied to a conversation (a final
    assistant message is continued, not closed), or a plain string as it is."""
    if isinstance(prompt, str):
        return prompt
    continue_final = continues_assistant(prompt)
    return tokenizer.apply_chat_template(
        prompt, tokenize=False, add_generation_prompt=not continue_final, continue_final_message=continue_final
    )


def encode(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of `prompt`: chat templates hold their special tokens; plain strings get the tokenizer's."""
    return tokenizer(render(tokenizer, prompt), add_special_tokens=isinstance(prompt, str))["input_ids"]
