"""Evaluation of preference models on HHH-style comparisons (`caikit eval pm`).

Accepted data (a file, several files, or a directory of them; each file is a subset unless rows
carry a `subset`/`category` field):
- the paper's `438HHHEvaluations.jsonl` (`text_correct` vs `text_incorrect` transcripts), hh-rlhf
  `{chosen, rejected}` transcripts and generic `{prompt, chosen, rejected}` JSONL: the PM is right
  when it scores the chosen/correct response higher;
- BIG-bench multiple-choice JSON `{"examples": [{"input", "target_scores": {response: score}}]}`
  with a `Human:`/`Assistant:` transcript as input and any number of responses: the PM is right
  when its top-scored response has the top target score.
"""

from __future__ import annotations

import json
from pathlib import Path

from caikit import inputs
from caikit.errors import CaikitError


def data_files(paths: list[str]) -> list[Path]:
    files = []
    for spec in paths:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.endswith((".json", ".jsonl", ".jsonl.gz")))
            if not found:
                raise CaikitError(f"--data {spec}: no .json/.jsonl files in this directory")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise CaikitError(f"--data {spec}: no such file or directory")
    return files


def subset_name(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")


def bigbench_items(path: Path) -> list[dict]:
    """Multiple-choice items `{"prompt", "responses", "targets", "subset"}` from BIG-bench JSON."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CaikitError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("examples"), list):
        raise CaikitError(f"{path}: BIG-bench JSON needs an 'examples' list")
    items = []
    for k, example in enumerate(raw["examples"]):
        where = f"{path}: examples[{k}]"
        scores = example.get("target_scores") if isinstance(example, dict) else None
        text = example.get("input") if isinstance(example, dict) else None
        if not isinstance(text, str) or not isinstance(scores, dict) or len(scores) < 2:
            raise CaikitError(f"{where}: needs an 'input' transcript and 'target_scores' with at least 2 responses")
        transcript = text if text.startswith("\n\n") else "\n\n" + text
        prompt = inputs.parse_transcript(transcript.rstrip().removesuffix("Assistant:").rstrip(), keep_history=True)
        if prompt is None:
            raise CaikitError(f"{where}: 'input' is not a Human:/Assistant: transcript")
        items.append({"prompt": prompt, "responses": list(scores), "targets": [float(v) for v in scores.values()], "subset": subset_name(path)})
    return items


def pair_items(path: Path) -> list[dict]:
    items = []
    for row in inputs.read_preferences(str(path)):
        items.append(
            {
                "prompt": row["prompt"],
                "responses": [row["chosen"][0]["content"], row["rejected"][0]["content"]],
                "targets": [1.0, 0.0],
                "subset": row.get("subset", subset_name(path)),
            }
        )
    return items


def load_items(paths: list[str]) -> list[dict]:
    items = []
    for path in data_files(paths):
        items += bigbench_items(path) if path.suffix == ".json" else pair_items(path)
    if not items:
        raise CaikitError("--data: no comparisons found")
    return items


def pm_accuracy(pm, items: list[dict]) -> dict:
    """Accuracy overall and per subset, with 95% Wilson intervals."""
    from caikit.label import wilson

    conversations = [item["prompt"] + [{"role": "assistant", "content": r}] for item in items for r in item["responses"]]
    rewards = pm.rewards(conversations)
    by_subset: dict[str, list[int]] = {}
    at = 0
    for item in items:
        mine = rewards[at : at + len(item["responses"])]
        at += len(item["responses"])
        best = max(range(len(mine)), key=lambda i: mine[i])
        by_subset.setdefault(item["subset"], []).append(int(item["targets"][best] == max(item["targets"])))

    def summary(hits):
        lo, hi = wilson(sum(hits), len(hits))
        return {"n": len(hits), "accuracy": sum(hits) / len(hits), "ci95": [lo, hi]}

    everything = [h for hits in by_subset.values() for h in hits]
    return {"overall": summary(everything), "subsets": {k: summary(v) for k, v in sorted(by_subset.items())}}

