"""Evaluation of preference models on HHH-style comparisons (`caikit eval pm`).

Accepted data (a file, several files, or a directory of them; each file is a subset unless rows
carry a `subset`/`category` field):
- the paper's `438HHHEvaluations.jsonl` (`text_correct` vs `text_incorrect` transcripts), hh-rlhf
  `{chosen, rejected}` transcripts and generic `{prompt, chosen, rejected}` JSONL: the PM is right
  when it scores the chosen/correct response higher;
- BIG-bench multiple-choice JSON `{"examples": [{"input", "target_scores": {response: score}}]}`
  (hhh_alignment: `harmless/task.json`, `helpful/task.json`, ...; the subset is named after the
  folder) whose input is a bare user request or a `Human:`/`Assistant:` transcript, with any number
  of responses: the PM is right when its top-scored response has the top target score.
"""

from __future__ import annotations

import json
from pathlib import Path

from caikit import inputs, reading
from caikit.errors import CaikitError
from caikit.judge import ANSWER
from caikit.records import batches
from caikit.stats import accuracy_table


def data_files(paths: list[str]) -> list[Path]:
    files = []
    for spec in paths:
        path = Path(spec)
        if path.is_dir():  # BIG-bench keeps each subset in its own folder (hhh_alignment/harmless/task.json)
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".json", ".jsonl", ".jsonl.gz")))
            if not found:
                raise CaikitError(f"-i/--input {spec}: no .json/.jsonl files in this directory")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise CaikitError(f"-i/--input {spec}: no such file or directory")
    return files


def subset_name(path: Path) -> str:
    """A file's subset: its name, or its folder's for BIG-bench's `SUBSET/task.json` layout."""
    if path.name == "task.json" and path.parent.name:
        return path.parent.name
    return path.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")


def bigbench_examples(path: Path) -> list[tuple[str, str, dict]]:
    """(where, input text, target_scores) of each example of a BIG-bench JSON task file."""
    text = reading.decode(str(path), reading.read_bytes(str(path)))
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise CaikitError(f"{path}:{err.lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
    if isinstance(raw, dict) and "examples" not in raw and isinstance(raw.get("subtasks"), list):
        return []  # a composite task's own task.json: its subtasks are the folders beside it
    if not isinstance(raw, dict) or not isinstance(raw.get("examples"), list):
        raise CaikitError(f"{path}: BIG-bench JSON needs an 'examples' list")
    examples = []
    for k, example in enumerate(raw["examples"]):
        where = f"{path}: examples[{k}]"
        scores = example.get("target_scores") if isinstance(example, dict) else None
        text = example.get("input") if isinstance(example, dict) else None
        if not isinstance(text, str) or not isinstance(scores, dict) or len(scores) < 2:
            raise CaikitError(f"{where}: needs an 'input' and 'target_scores' with at least 2 options")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()):
            raise CaikitError(f"{where}: 'target_scores' values must be numbers")
        examples.append((where, text, scores))
    return examples


def bigbench_prompt(text: str) -> list[dict] | None:
    """The conversation of a BIG-bench input: a `Human:`/`Assistant:` transcript (some hhh_alignment
    examples are multi-turn), or, as most are, a bare user request."""
    if "Human:" in text and "Assistant:" in text:
        transcript = text if text.startswith("\n\n") else "\n\n" + text.lstrip()
        turns = inputs.parse_transcript(transcript.rstrip().removesuffix("Assistant:").rstrip(), keep_history=True)
        if turns:
            return turns
    return [{"role": "user", "content": text.strip()}] if text.strip() else None


def bigbench_items(path: Path) -> list[dict]:
    """Comparison items `{"prompt", "responses", "targets", "subset"}` from BIG-bench JSON."""
    items = []
    for where, text, scores in bigbench_examples(path):
        prompt = bigbench_prompt(text)
        if prompt is None:
            raise CaikitError(f"{where}: 'input' is empty")
        items.append({"prompt": prompt, "responses": list(scores), "targets": [float(v) for v in scores.values()], "subset": subset_name(path)})
    return items


def pair_items(path: Path):
    """Comparison items of a pair file (the chosen response is the target), one at a time."""
    for row in inputs.iter_preferences(str(path)):
        yield {
            "prompt": row["prompt"],
            "responses": [row["chosen"][0]["content"], row["rejected"][0]["content"]],
            "targets": [1.0, 0.0],
            "subset": row.get("subset", subset_name(path)),
        }


def iter_items(paths: list[str], limit: int | None = None):
    """The comparison items of every file, in order (the first `limit` of them), one at a time; an
    input with none is an error."""
    found = 0
    for path in data_files(paths):
        for item in bigbench_items(path) if path.suffix == ".json" else pair_items(path):
            if limit and found >= limit:
                return
            found += 1
            yield item
    if not found:
        raise CaikitError(f"-i {' '.join(paths)}: no comparisons found")


def load_items(paths: list[str], limit: int | None = None) -> list[dict]:
    return list(iter_items(paths, limit))


def pm_accuracy(pm, items, chunk: int = 128) -> dict:
    """Accuracy overall and per subset, with 95% Wilson intervals, of a PM on `items` (any iterable,
    scored `chunk` items at a time)."""
    by_subset: dict[str, list[int]] = {}
    for part in batches(items, chunk):
        conversations = [item["prompt"] + [{"role": "assistant", "content": r}] for item in part for r in item["responses"]]
        rewards = pm.rewards(conversations)
        at = 0
        for item in part:
            mine = rewards[at : at + len(item["responses"])]
            at += len(item["responses"])
            best = max(range(len(mine)), key=lambda i: mine[i])
            by_subset.setdefault(item["subset"], []).append(int(item["targets"][best] == max(item["targets"])))

    return accuracy_table(by_subset)


# -- multiple choice (`caikit eval mc`) -------------------------------------------------------------

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def mc_question(stem: str, options: list[str]) -> str:
    lines = "\n".join(f" ({LETTERS[k]}) {o}" for k, o in enumerate(options))
    return f"{stem.strip()}\nOptions:\n{lines}"


def mc_items(paths: list[str], seed: int = 0) -> list[dict]:
    """Items `{"text", "choices", "correct": set of indices, "subset"}` for scoring with a model.

    - the paper's JSONL (`prompt` ending "The answer is:", `corrects`, `incorrects`);
    - BIG-bench JSON (`examples[].input`, `target_scores`): options shuffled with `seed`, because the
      correct answer is often listed first;
    - generic JSONL `{question, options: [...], answer}` (answer: index, letter or option text).
    """
    import random

    rng = random.Random(seed)
    items = []
    for path in data_files(paths):
        subset = subset_name(path)
        if path.suffix == ".json":
            for _, text, scores in bigbench_examples(path):
                options = list(scores)
                rng.shuffle(options)
                best = max(scores.values())
                items.append({"text": mc_question(text, options), "choices": [f" ({LETTERS[i]})" for i in range(len(options))],
                              "correct": {i for i, o in enumerate(options) if scores[o] == best}, "subset": subset})
            continue
        for number, row in reading.read_jsonl(str(path)):
            where = f"{path}:{number}"
            if "corrects" in row and "incorrects" in row and isinstance(row.get("prompt"), str):
                choices = list(row["corrects"]) + list(row["incorrects"])
                correct = set(range(len(row["corrects"])))
                text = row["prompt"]
            elif "question" in row and isinstance(row.get("options"), list):
                options, answer = row["options"], row.get("answer")
                if len(options) < 2:
                    raise CaikitError(f"{where}: needs at least 2 options")
                if isinstance(answer, int) and 0 <= answer < len(options):
                    index = answer
                elif isinstance(answer, str) and answer in options:
                    index = options.index(answer)
                elif isinstance(answer, str) and len(answer.strip("() ")) == 1 and answer.strip("() ") in LETTERS[: len(options)]:
                    index = LETTERS.index(answer.strip("() "))
                else:
                    raise CaikitError(f"{where}: 'answer' must be an option's index, letter or text")
                text = mc_question(row["question"], options) + f"\n\n{ANSWER}"
                choices, correct = [f" ({LETTERS[i]})" for i in range(len(options))], {index}
            else:
                raise CaikitError(f"{where}: unknown multiple-choice format (expected prompt/corrects/incorrects or question/options/answer)")
            items.append({"text": text, "choices": choices, "correct": correct, "subset": row.get("subset", row.get("category", subset))})
    if not items:
        raise CaikitError(f"-i {' '.join(paths)}: no questions found")
    return items


def as_chat(text: str) -> list[dict]:
    """A multiple-choice prompt as a user turn, with "The answer is:" starting the assistant turn."""
    stem = text.rstrip()
    if stem.endswith(ANSWER):
        stem = stem[: -len(ANSWER)].rstrip()
    return [{"role": "user", "content": stem.strip()}, {"role": "assistant", "content": ANSWER}]


def mc_accuracy(backend, items: list[dict], raw: bool = False) -> dict:
    """Accuracy of a model answering by the log-probability of each option letter."""
    prompts = [it["text"] if raw else as_chat(it["text"]) for it in items]
    scores = backend.score_choices(prompts, [it["choices"] for it in items])
    hits: dict[str, list[int]] = {}
    for it, row in zip(items, scores):
        best = max(range(len(row)), key=lambda i: row[i])
        hits.setdefault(it["subset"], []).append(int(best in it["correct"]))
    return accuracy_table(hits)
