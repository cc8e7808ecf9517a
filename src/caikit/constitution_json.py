"""Constitutions in JSON formats other projects use: the CAI paper's own prompt files
(`CritiqueRevisionInstructions.json`, `CritiqueRevisionFewShotPrompts.json`, `RLMadisonInstructions.json`,
`RLMadisonFewShotPrompts.json`) and Hugging Face llm-swarm's `{constitutions, system_chat}` JSON.
`caikit.constitution.read` dispatches here; every problem is collected with its location."""

from __future__ import annotations

import json
import re
from pathlib import Path

from caikit.constitution_model import (
    Comparison, ComparisonExample, Constitution, CritiqueExample, Principle, Problems, messages_of, text_of,
)
from caikit.errors import CaikitError


def load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CaikitError(f"{path}: not valid JSON ({err})") from None


_REQUEST = re.compile(r"^\s*(?:CritiqueRequest|RevisionRequest):\s*(.*?)\s*(?:(?:Critique|Revision):\s*)?$", re.S)


def _strip_request(text: str) -> str:
    match = _REQUEST.match(text)
    return match.group(1).strip() if match else text.strip()


def paper_principles(path: Path, const: Constitution, problems: Problems) -> None:
    raw = load_json(path)
    if not isinstance(raw, dict):
        problems.add(str(path), "expected an object of {id: {prompt: [...], edit_request: ...}}")
        return
    for pid, item in raw.items():
        where = f"{path}: {pid}"
        if not isinstance(item, dict):
            problems.add(where, "expected {prompt: [critique request], edit_request: revision request}")
            continue
        prompts = item.get("prompt")
        critique = prompts[0] if isinstance(prompts, list) and prompts and isinstance(prompts[0], str) else ""
        revision = item.get("edit_request") if isinstance(item.get("edit_request"), str) else ""
        const.principles.append(Principle(pid, _strip_request(critique), _strip_request(revision)))


_SECTION = re.compile(r"\n\n(CritiqueRequest|Critique|RevisionRequest|Revision):[ \t]?")


def paper_critique_examples(path: Path, const: Constitution, problems: Problems) -> None:
    from caikit.inputs import parse_transcript

    raw = load_json(path)
    if not isinstance(raw, list):
        problems.add(str(path), "expected a list of transcript strings")
        return
    for k, text in enumerate(raw):
        where = f"{path}: [{k}]"
        if not isinstance(text, str):
            problems.add(where, "expected a transcript string")
            continue
        text = re.sub(r"\n\nHuman:\s*$", "", text)  # some end with a stray next turn
        dialogue, *rest = _SECTION.split(text)
        sections = dict(zip(rest[0::2], (s.strip() for s in rest[1::2])))
        turns = parse_transcript(dialogue, keep_history=True) or []
        answer = re.split(r"\n\nAssistant:[ \t]?", dialogue)[-1].strip() if "\n\nAssistant:" in dialogue else ""
        if not turns or not answer or not all(sections.get(s) for s in ("Critique", "Revision")):
            problems.add(where, "expected Human/Assistant turns, then Critique and Revision sections")
            continue
        const.critique_examples.append(
            CritiqueExample(
                turns,
                answer,
                sections["Critique"],
                sections["Revision"],
                critique_request=sections.get("CritiqueRequest", ""),
                revision_request=sections.get("RevisionRequest", ""),
            )
        )


def paper_comparisons(path: Path, const: Constitution, problems: Problems) -> None:
    raw = load_json(path)
    if not isinstance(raw, list):
        problems.add(str(path), "expected a list of principle strings")
        return
    for k, text in enumerate(raw):
        question = re.sub(r"\s*Options:\s*$", "", text).strip() if isinstance(text, str) else ""
        const.comparisons.append(Comparison(f"madison{k}", question))


def paper_comparison_examples(path: Path, const: Constitution, problems: Problems) -> None:
    from caikit.inputs import parse_transcript

    raw = load_json(path)
    if not isinstance(raw, list):
        problems.add(str(path), "expected a list of {prompt, corrects, incorrects}")
        return
    for k, item in enumerate(raw):
        where = f"{path}: [{k}]"
        ok = isinstance(item, dict) and isinstance(item.get("prompt"), str)
        turns = parse_transcript(re.sub(r"\n\nAssistant:\s*$", "", item["prompt"]), keep_history=True) if ok else None
        corrects, incorrects = (item.get("corrects"), item.get("incorrects")) if ok else (None, None)
        if not turns or not corrects or not incorrects:
            problems.add(where, "expected a Human/Assistant prompt with 'corrects' and 'incorrects' responses")
            continue
        # the better response goes first or second alternately, so few-shot answers are not all (A)
        good, bad = str(corrects[0]).strip(), str(incorrects[0]).strip()
        a, b, answer = (good, bad, "A") if k % 2 == 0 else (bad, good, "B")
        const.comparison_examples.append(ComparisonExample(turns, a, b, answer))


PAPER_FILES = {
    "CritiqueRevisionInstructions.json": paper_principles,
    "CritiqueRevisionFewShotPrompts.json": paper_critique_examples,
    "RLMadisonInstructions.json": paper_comparisons,
    "RLMadisonFewShotPrompts.json": paper_comparison_examples,
}


def read_swarm(path: Path, raw: dict) -> tuple[Constitution, Problems]:
    problems = Problems()
    const = Constitution(name=path.stem, source=str(path))
    items = raw.get("constitutions")
    if not isinstance(items, list):
        problems.add(str(path), "'constitutions' must be a list of {critic, revision}")
        items = []
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            problems.add(f"{path}: constitutions[{k}]", "expected {critic, revision}")
            continue
        const.principles.append(Principle(f"swarm{k}", text_of(item.get("critic")), text_of(item.get("revision"))))
    for k, chat in enumerate(raw.get("system_chat") or []):
        where = f"{path}: system_chat[{k}]"
        messages = messages_of(chat)
        roles = [m["role"] for m in messages] if messages else []
        if roles != ["user", "assistant"] * 3:
            problems.add(where, "expected 6 messages: user prompt, assistant answer, critique request, critique, revision request, revision")
            continue
        const.critique_examples.append(
            CritiqueExample(
                messages[:1],
                messages[1]["content"],
                messages[3]["content"],
                messages[5]["content"],
                critique_request=messages[2]["content"],
                revision_request=messages[4]["content"],
            )
        )
    return const, problems
