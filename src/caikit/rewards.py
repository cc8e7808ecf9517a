"""The constitution as a reward, for the engines RL is scaled on.

- TRL: `constitutional` and `preference_model` have TRL's reward-function signature
  `(prompts, completions, **kwargs) -> list[float]` (conversational or plain text), so
  `trl grpo --reward_funcs caikit.rewards.constitutional ...` or `GRPOTrainer(reward_funcs=[...])` use
  them. Their settings come from the TOML file named by `$CAIKIT_REWARD_CONFIG` (see `Settings`);
  each call scores its whole batch in one judge call.
- OpenRLHF and verl: `caikit serve-reward` serves the same `Scorer` over HTTP (caikit.reward_server),
  and `caikit.integrations.verl.compute_score` calls it.

What a reward is:
- with a preference model (`pm = DIR`): its scalar for prompt + response;
- otherwise, the constitutional feedback model (`feedback_model = SPEC`, local or on a server):
  `absolute` mode, p(the response is harmless and helpful) from the (A)/(B) question in both
  wordings; `vs-reference` mode, p(the response is better than a reference answer) under
  `principles` comparison principles drawn per (prompt, response), both orders, averaged. The
  reference comes from the data (TRL: a `reference` column; verl: the ground truth; rlaif: the start
  policy's greedy answer). Both are in [0, 1];
  `group` mode, relative judging for GRPO and RLOO, which score `num_generations` completions of a
  prompt together: the completions of one prompt in a batch meet pairwise (`group_pairs`), each pair
  under `principles` drawn comparison principles in both orders, and the rewards are the
  Bradley-Terry log-strengths fitted within the group (mean 0 in each group: only differences
  within a group mean anything, which is all a group baseline uses). Cost: `group_questions`.

A settings file:

    pm = "runs/pm"                      # or leave out and judge with the feedback model:
    feedback_model = "openai:Qwen/Qwen2.5-7B-Instruct@http://gpu01:8000/v1"
    constitution = "default"
    mode = "absolute"                   # or "vs-reference", or "group"
    principles = 1
    opponents = 4                       # group: completions each meets (0: every pair)
    seed = 0
    [server]                            # defaults for openai: model specs
    api_key_env = "OPENAI_API_KEY"
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from caikit import judge, stats
from caikit.errors import CaikitError
from caikit.models import DEFAULT_MODEL
from caikit.records import canonical, content_id

log = logging.getLogger(__name__)
ENV = "CAIKIT_REWARD_CONFIG"
MODES = ("absolute", "vs-reference", "group")


@dataclass
class Settings:
    pm: str | None = None
    feedback_model: str = DEFAULT_MODEL
    constitution: str = "default"
    mode: str = "absolute"
    principles: int = 1
    opponents: int = 4  # group mode: how many others each completion meets; 0 = every pair
    seed: int = 0
    backend: str = "transformers"
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 16
    vllm_memory: float | None = None  # backend vllm: its share of GPU memory
    server: dict = field(default_factory=dict)  # base_url, api_key_env, tokenizer, concurrency, timeout, retries

    def __post_init__(self):
        if self.mode not in MODES:
            raise CaikitError(f"mode {self.mode!r}: choose {' or '.join(MODES)}")
        if self.principles < 1:
            raise CaikitError(f"principles {self.principles}: must be at least 1")
        if self.opponents < 0:
            raise CaikitError(f"opponents {self.opponents}: must be 0 (every pair) or more")

    @classmethod
    def read(cls, path: str | Path) -> "Settings":
        """Settings from a TOML file; an unknown key or a wrong type is one line naming the file."""
        from caikit.constitution import tomllib

        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise CaikitError(f"{path}: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise CaikitError(f"{path}: invalid TOML ({err})") from None
        known = {f.name: f for f in fields(cls)}
        for key, value in raw.items():
            if key not in known:
                raise CaikitError(f"{path}: unknown setting {key!r}; settings are {', '.join(known)}")
            want = dict if key == "server" else int if key in ("principles", "opponents", "seed", "batch_size") else (int, float) if key == "vllm_memory" else str
            if not isinstance(value, want) or isinstance(value, bool):
                raise CaikitError(f"{path}: {key} must be a {'number' if key == 'vllm_memory' else want.__name__}")
        return cls(**raw)

    @classmethod
    def from_env(cls) -> "Settings":
        path = os.environ.get(ENV)
        if not path:
            log.warning("$%s is not set: rewards from the embedded model in absolute mode (a smoke test, not a judge)", ENV)
            return cls()
        return cls.read(path)


def as_conversation(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def as_text(completion) -> str:
    """A completion's text: the string, or its last message's content. An assistant message may come
    without content (a tool call) or with content parts: no text is "", parts give their text."""
    if isinstance(completion, str):
        return completion
    content = completion[-1].get("content") if completion else None
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return content or ""


def constitutional_scores(backend, comparisons, prompts: list, texts: list[str], references: list | None,
                          mode: str, seed: int, principles: int = 1, p_slot_a: list | None = None) -> list[float]:
    """p(each response is harmless and helpful) (`absolute`), or p(it beats its reference) under
    `principles` drawn comparison principles, both orders, averaged (`vs-reference`). Every
    question's p(A) is appended to `p_slot_a` when given."""
    prompts = [as_conversation(p) for p in prompts]
    if mode == "absolute":
        return judge.score_yes_no(backend, list(zip(prompts, texts)), judge.HARMLESS_AND_HELPFUL, p_slot_a)
    if references is None or any(r is None for r in references):
        raise ValueError("vs-reference rewards need a reference answer for every prompt")
    jobs, owners = [], []
    for k, (prompt, text, reference) in enumerate(zip(prompts, texts, references)):
        for principle in judge.draw_principles(comparisons, principles, seed, content_id([prompt, text])):
            jobs.append((prompt, text, reference, principle))
            owners.append(k)
    totals = [0.0] * len(texts)
    for k, result in zip(owners, judge.score_pairs(backend, jobs)):
        totals[k] += result["p"] / principles
        if p_slot_a is not None:
            p_slot_a.extend(result["p_slot_a"])
    return totals


def group_pairs(size: int, opponents: int) -> list[tuple[int, int]]:
    """Which completions of a group meet: every pair when `opponents` is 0 or at least size - 1; else
    a round-robin ring in which completion i meets i +- 1, ..., i +- ceil(opponents / 2), so each meets
    at least `opponents` others and the comparisons connect the whole group."""
    if opponents == 0 or opponents >= size - 1:
        return list(itertools.combinations(range(size), 2))
    ring = {tuple(sorted((i, (i + d) % size))) for d in range(1, (opponents + 1) // 2 + 1) for i in range(size)}
    return sorted(ring)


def group_questions(size: int, opponents: int, principles: int = 1) -> int:
    """Questions asked of the feedback model for one prompt's group: pairs x principles x 2 orders
    (every pair: G(G-1) x principles; a ring: about G x 2ceil(k/2) x principles)."""
    return len(group_pairs(size, opponents)) * principles * 2


def group_scores(backend, comparisons, prompts: list, texts: list[str], seed: int, principles: int = 1, opponents: int = 4,
                 p_slot_a: list | None = None) -> list[float]:
    """Bradley-Terry log-strengths of each response within the group of responses to the same prompt,
    from pairwise judgments (both orders, `principles` drawn per pair; one judge call for the batch).
    A response alone with its prompt gets 0."""
    prompts = [as_conversation(p) for p in prompts]
    groups: dict[str, list[int]] = {}
    for k, prompt in enumerate(prompts):
        groups.setdefault(canonical(prompt), []).append(k)
    members = list(groups.values())
    jobs, owners = [], []
    for g, group in enumerate(members):
        for a, b in group_pairs(len(group), opponents):
            i, j = group[a], group[b]
            for principle in judge.draw_principles(comparisons, principles, seed, content_id([prompts[i], texts[i], texts[j]])):
                jobs.append((prompts[i], texts[i], texts[j], principle))
                owners.append((g, a, b))
    if any(len(group) == 1 for group in members):
        log.warning("group rewards: a prompt with one response in the batch has nothing to meet; it gets 0")
    outcomes: list[list] = [[] for _ in members]
    for (g, a, b), result in zip(owners, judge.score_pairs(backend, jobs) if jobs else []):
        outcomes[g].append((a, b, result["p"]))
        if p_slot_a is not None:
            p_slot_a.extend(result["p_slot_a"])
    rewards = [0.0] * len(texts)
    for group, found in zip(members, outcomes):
        if found:
            for k, strength in zip(group, stats.bradley_terry(found, len(group))):
                rewards[k] = strength
    return rewards


class Scorer:
    """Rewards for (prompt, response[, reference]) from a preference model or the feedback model."""

    def __init__(self, settings: Settings, *, backend=None, pm=None):
        from caikit import constitution as constitutions

        self.settings = settings
        self.kind = "pm" if settings.pm else "constitutional"
        self._backend, self._pm = backend, pm
        const = constitutions.load(settings.constitution)
        self.comparisons = const.comparisons_for("harmlessness")
        self.constitution = const.provenance()

    def backend(self):
        if self._backend is None:
            from caikit import backends

            s = self.settings
            self._backend = backends.for_scoring(backends.build(
                s.backend, s.feedback_model, dtype=s.dtype, device=s.device, batch_size=s.batch_size, vllm_memory=s.vllm_memory,
                endpoint=s.server))
        return self._backend

    def pm(self):
        if self._pm is None:
            from caikit.preference_model import PreferenceModel

            self._pm = PreferenceModel(self.settings.pm, device=self.settings.device, dtype=self.settings.dtype,
                                      batch_size=self.settings.batch_size)
        return self._pm

    def score(self, prompts: list, responses: list[str], references: list | None = None, p_slot_a: list | None = None) -> list[float]:
        """The rewards; for the feedback model, every question's p(A) is appended to `p_slot_a` when given."""
        if self.kind == "pm":
            conversations = [as_conversation(p) + [{"role": "assistant", "content": r}] for p, r in zip(prompts, responses)]
            return self.pm().rewards(conversations)
        s = self.settings
        if s.mode == "group":
            return group_scores(self.backend(), self.comparisons, prompts, responses, s.seed, s.principles, s.opponents, p_slot_a)
        return constitutional_scores(self.backend(), self.comparisons, prompts, responses, references, s.mode, s.seed, s.principles,
                                     p_slot_a)

    def describe(self) -> dict:
        s = self.settings
        if self.kind == "pm":
            return {"kind": "pm", "path": s.pm}
        backend = self.backend()
        return {"kind": "constitutional", "model": s.feedback_model, "backend": backend.name, **getattr(backend, "details", {}),
                "mode": s.mode, "principles": s.principles, **({"opponents": s.opponents} if s.mode == "group" else {}), "seed": s.seed,
                "constitution": self.constitution}


_scorers: dict[str, Scorer] = {}


def scorer() -> Scorer:
    """The process's scorer for the settings named by $CAIKIT_REWARD_CONFIG (built once)."""
    key = os.environ.get(ENV, "")
    if key not in _scorers:
        _scorers[key] = Scorer(Settings.from_env())
    return _scorers[key]


class TrlReward:
    """A `Scorer` with TRL's reward-function signature. A vs-reference reward compares each response
    with `references[canonical(prompt)]` when given (rlaif: the start policy's greedy answers), else
    with the data's `reference` column."""

    def __init__(self, scorer: Scorer, references: dict[str, str] | None = None):
        self.scorer = scorer
        self.references = references
        self.__name__ = scorer.kind  # TRL logs rewards/<name>

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        references = kwargs.get("reference")
        if self.references is not None:
            references = [self.references[canonical(p)] for p in prompts]
        asked: list[float] = []
        found = self.scorer.score(list(prompts), [as_text(c) for c in completions], references, asked)
        log_metric = kwargs.get("log_metric")  # TRL >= 1.x: scalars logged beside kl and entropy
        if log_metric is not None and asked:
            log_metric(f"caikit/{self.__name__}/position_bias", judge.position_bias(asked))
        return found



def _trl_call(want: str, prompts, completions, kwargs) -> list[float]:
    found = scorer()
    if found.kind != want:
        raise ValueError(f"caikit.rewards.{'preference_model' if want == 'pm' else 'constitutional'}: "
                         f"the settings in ${ENV} give a {found.kind} reward")
    return TrlReward(found)(prompts, completions, **kwargs)


def constitutional(prompts, completions, **kwargs) -> list[float]:
    """TRL reward: the constitutional feedback model's judgment of each completion, in [0, 1]; its
    position bias (mean p(A) − 0.5 over the questions asked) goes to TRL's `log_metric`."""
    return _trl_call("constitutional", prompts, completions, kwargs)


async def constitutional_async(prompts, completions, **kwargs) -> list[float]:
    """`constitutional` as a coroutine function: TRL gathers async reward functions concurrently, so a
    served judge does not hold up the other rewards of a step."""
    import asyncio

    return await asyncio.to_thread(_trl_call, "constitutional", prompts, completions, kwargs)


def preference_model(prompts, completions, **kwargs) -> list[float]:
    """TRL reward: the preference model's scalar for each prompt + completion."""
    return _trl_call("pm", prompts, completions, kwargs)
