"""Crash trials: `kill -9` a stage at a random moment, rerun it with `--resume` until it finishes, and
check that every record is there exactly once, every line parses and the result equals an
uninterrupted run with the same seed. Training stages killed mid-run leave nothing at -o, and
`--resume` continues from the last checkpoint.

The test runs a few seeded trials per stage on the tiny model; by hand, many more:
    .venv/bin/python tests/test_crash_resume.py --trials 200
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
CAIKIT = [sys.executable, "-m", "caikit.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # tiny models: one thread each, no spinning
QUESTIONS = [f"Question number {k}: how would you {verb} a {thing}?" for k, (verb, thing) in
             enumerate([(v, t) for v in ("break", "fix", "hide", "sell") for t in ("lock", "car", "phone", "fence")])]


def stage_args(stage: str, work: Path, tiny: Path) -> tuple[list[str], Path]:
    """The command of each stage (without --resume) and the file or dir it writes."""
    common = ["--seed", "3", "-q"]
    if stage == "redteam":
        out = work / "redteam.jsonl"
        return ["redteam", "-i", str(work / "prompts.txt"), "-o", str(out), "--model", str(tiny), "--max-new-tokens", "24",
                "--batch-size", "2", *common], out
    if stage == "revise":
        out = work / "revise.jsonl"
        return ["revise", "-i", str(work / "answers.jsonl"), "-o", str(out), "--model", str(tiny), "--rounds", "1", "--shots", "1",
                "--max-new-tokens", "8", "--batch-size", "2", *common], out
    if stage == "label":
        out = work / "labels.jsonl"
        return ["label", "-i", str(work / "pairs.jsonl"), "-o", str(out), "--feedback-model", str(tiny), "--cot",
                "--max-new-tokens", "12", "--batch-size", "2", "--chunk-size", "2", *common], out
    if stage == "compare":
        out = work / "compare"
        return ["eval", "compare", "--model", f"warm={tiny}@1.0", "--model", f"cold={tiny}@0.3", "--red-team", str(work / "prompts.txt"),
                "--judge", str(tiny), "--max-new-tokens", "16", "--batch-size", "2", "-o", str(out), *common], out
    raise ValueError(stage)


STAGES = ("redteam", "revise", "label", "compare")


def prepare(work: Path, tiny: Path) -> None:
    """Inputs shared by the trials: prompts, answers to revise, pairs to label."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "prompts.txt").write_text("".join(q + "\n" for q in QUESTIONS))
    args, out = stage_args("redteam", work, tiny)
    subprocess.run([*CAIKIT, *args], check=True, capture_output=True, env=ENV)
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    (work / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in answers[:8]))
    pairs = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": [{"role": "assistant", "content": "No."}]} for r in answers[:10]]
    (work / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out.unlink()


def records(out: Path) -> dict[str, list[dict]]:
    """Each JSONL file a stage wrote, parsed (a line that does not parse fails the trial); timestamps dropped."""
    files = [out] if out.is_file() else sorted(p for p in out.rglob("*.jsonl"))
    found = {}
    for path in files:
        rows = [json.loads(line) for line in path.read_text().splitlines()]  # every line must parse
        found[str(path.relative_to(out.parent))] = [without_timestamps(r) for r in rows]
    return found


def written(out: Path) -> int:
    """Lines written so far to the output (its .partial files and the files already finished)."""
    files = [out, Path(str(out) + ".partial")] if out.suffix == ".jsonl" else [*out.rglob("*.jsonl"), *out.rglob("*.partial")]
    count = 0
    for path in files:
        try:
            count += path.read_bytes().count(b"\n")
        except OSError:
            pass  # not there yet, or renamed meanwhile
    return count


def without_timestamps(value):
    if isinstance(value, dict):
        return {k: without_timestamps(v) for k, v in value.items() if k not in ("created", "seconds")}
    if isinstance(value, list):
        return [without_timestamps(v) for v in value]
    return value


def reference(stage: str, base: Path, tiny: Path) -> tuple[dict, float]:
    """An uninterrupted run: its records and how long it took."""
    work = base / f"ref-{stage}"
    if not work.exists():
        work.mkdir()
        for name in ("prompts.txt", "answers.jsonl", "pairs.jsonl"):
            (work / name).write_bytes((base / name).read_bytes())
        started = time.time()
        args, out = stage_args(stage, work, tiny)
        subprocess.run([*CAIKIT, *args], check=True, capture_output=True, env=ENV)
        (work / "seconds").write_text(str(time.time() - started))
    args, out = stage_args(stage, work, tiny)
    return records(out), float((work / "seconds").read_text())


def trial(stage: str, seed: int, base: Path, tiny: Path, kills: int = 1) -> dict:
    """Kill the stage `kills` times at random moments, then resume until it finishes; compare."""
    expected, seconds = reference(stage, base, tiny)
    total = sum(len(rows) for rows in expected.values())
    work = base / f"{stage}-{seed}"
    work.mkdir()
    for name in ("prompts.txt", "answers.jsonl", "pairs.jsonl"):
        (work / name).write_bytes((base / name).read_bytes())
    args, out = stage_args(stage, work, tiny)
    rng = random.Random(seed)
    killed_mid_write, runs = 0, 0
    for attempt in range(kills + 8):
        command = [*CAIKIT, *args, *(["--resume"] if attempt else [])]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=ENV)
        runs += 1
        if attempt < kills:
            # the moment: once the output holds a random number of lines (0: at once), plus up to 50 ms
            target, deadline = rng.randrange(total), time.time() + 10 * seconds + 60
            while process.poll() is None and written(out) < target and time.time() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.05))
            if process.poll() is None:
                killed_mid_write += written(out) > 0
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                if out.is_file():  # the kill came after the output was complete and renamed into place
                    assert records(out) == expected, "a killed run left an incomplete file at -o"
                continue
        _, err = process.communicate()
        if process.returncode == 0:
            break
        raise AssertionError(f"{stage} seed {seed}: exit {process.returncode}: {err.decode()[-1500:]}")
    found = records(out)
    ids = {name: [r["id"] for r in rows if "id" in r] for name, rows in found.items()}
    duplicated = sum(len(v) - len(set(v)) for v in ids.values())
    lost = sum(len({r["id"] for r in rows if "id" in r} - set(ids.get(name, []))) for name, rows in expected.items())
    return {"stage": stage, "seed": seed, "runs": runs, "killed_mid_write": killed_mid_write, "lost": lost, "duplicated": duplicated,
            "equal": found == expected}


@pytest.fixture(scope="module")
def crash_base(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("crash")
    prepare(base, tiny_model)
    return base


@pytest.mark.parametrize("stage", STAGES)
def test_kill_and_resume_gives_the_uninterrupted_result(stage, crash_base, tiny_model):
    results = [trial(stage, seed, crash_base, tiny_model) for seed in range(5)]  # 20 trials over the 4 stages
    for r in results:
        assert r["lost"] == 0 and r["duplicated"] == 0 and r["equal"], r
    assert sum(r["killed_mid_write"] for r in results) >= 1, "no kill landed while records were being written"


def test_a_full_disk_is_exit_1_and_resume_completes(crash_base, tiny_model):
    """The file-size limit (`ulimit -f`) stands in for a full disk: the write fails with EFBIG."""
    import resource

    expected, _ = reference("redteam", crash_base, tiny_model)
    work = crash_base / "full-disk"
    work.mkdir()
    (work / "prompts.txt").write_bytes((crash_base / "prompts.txt").read_bytes())
    args, out = stage_args("redteam", work, tiny_model)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))  # noqa: E731
    full = subprocess.run([*CAIKIT, *args], capture_output=True, text=True, env=ENV, preexec_fn=limit)
    lines = full.stderr.strip().splitlines()
    assert full.returncode == 1 and len(lines) == 1 and "Traceback" not in full.stderr, full.stderr[-1500:]
    partial = Path(str(out) + ".partial")
    assert not out.exists() and partial.exists() and partial.stat().st_size <= 3000
    done = subprocess.run([*CAIKIT, *args, "--resume"], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr[-1500:]
    assert records(out) == expected


def test_a_full_tmpfs_is_exit_1_and_resume_completes_once_space_is_back(crash_base, tiny_model):
    """A real full disk: the output on a 12 kB tmpfs (ENOSPC), then the tmpfs grown and --resume.
    Needs root and a kernel that lets it mount; skipped elsewhere."""
    mount = crash_base / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root and a kernel that allows it")
    try:
        expected, _ = reference("redteam", crash_base, tiny_model)
        (mount / "prompts.txt").write_bytes((crash_base / "prompts.txt").read_bytes())
        args, out = stage_args("redteam", mount, tiny_model)
        full = subprocess.run([*CAIKIT, *args], capture_output=True, text=True, env=ENV)
        lines = full.stderr.strip().splitlines()
        assert full.returncode == 1 and len(lines) == 1 and "Traceback" not in full.stderr, full.stderr[-1500:]
        assert not out.exists() and Path(str(out) + ".partial").exists()
        subprocess.run(["mount", "-o", "remount,size=1m", str(mount)], check=True)
        done = subprocess.run([*CAIKIT, *args, "--resume"], capture_output=True, text=True, env=ENV)
        assert done.returncode == 0, done.stderr[-1500:]
        assert records(out) == expected
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def training_args(stage: str, tmp: Path, tiny: Path, pm: Path) -> tuple[list[str], int]:
    """A training command that takes long enough to be killed after a checkpoint, and its step count."""
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS]
    data = tmp / f"{stage}.jsonl"
    if stage == "sft":
        rows = [{"prompt": p, "completion": [{"role": "assistant", "content": "A careful answer."}]} for p in prompts]
        args, steps = ["--base-model", str(tiny), "--batch-size", "2"], 300
    elif stage == "train-pm":
        rows = [{"prompt": p, "chosen": [{"role": "assistant", "content": "A careful answer."}],
                 "rejected": [{"role": "assistant", "content": "No."}]} for p in prompts]
        args, steps = ["--base-model", str(tiny), "--batch-size", "2"], 200
    else:  # rlaif (RLOO against the tiny PM)
        rows = [{"prompt": p} for p in prompts]
        args, steps = ["--policy", str(tiny), "--reward", str(pm), "--algo", "rloo", "--batch-size", "4", "--num-generations", "2",
                       "--max-new-tokens", "4"], 60
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [*CAIKIT, stage, "-i", str(data), "-o", str(tmp / "model"), *args, "--max-steps", str(steps), "--save-steps", "5",
            "--device", "cpu", "-q"], steps


@pytest.mark.parametrize("stage", ["sft", "train-pm", "rlaif"])
def test_a_killed_training_run_leaves_nothing_at_o_and_resumes_from_its_checkpoint(stage, tiny_model, tiny_pm, tmp_path):
    args, steps = training_args(stage, tmp_path, tiny_model, tiny_pm)
    out, work = tmp_path / "model", tmp_path / "model.tmp"
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=ENV)
    deadline = time.time() + 300
    while not list(work.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists(), "a killed training run left something at -o"
    saved = sorted(int(p.name.split("-")[1]) for p in work.glob("checkpoint-*") if (p / "trainer_state.json").exists())
    assert saved and saved[-1] < steps, "no checkpoint was written before the kill, or the run had finished"
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr[-1500:]
    report = json.loads((out / "caikit_train.json").read_text())
    assert report["resumed_from"] == f"checkpoint-{saved[-1]}" and report["metrics"]["steps"] == steps


if __name__ == "__main__":
    import argparse
    import tempfile

    sys.path.insert(0, str(HERE))
    from conftest import build_tiny_model

    parser = argparse.ArgumentParser(description="Crash trials by hand: kill -9 at random moments, resume, compare.")
    parser.add_argument("--trials", type=int, default=200, help="trials in all, spread over the stages")
    parser.add_argument("--kills", type=int, default=2, help="kills per trial before it may finish")
    parser.add_argument("--stages", default=",".join(STAGES))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stages = args.stages.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        tiny = build_tiny_model(base / "tiny")
        prepare(base, tiny)
        totals = {s: {"trials": 0, "runs": 0, "killed_mid_write": 0, "lost": 0, "duplicated": 0, "unequal": 0} for s in stages}
        for k in range(args.trials):
            stage = stages[k % len(stages)]
            r = trial(stage, k, base, tiny, kills=args.kills)
            t = totals[stage]
            t["trials"] += 1
            t["runs"] += r["runs"]
            t["killed_mid_write"] += r["killed_mid_write"]
            t["lost"] += r["lost"]
            t["duplicated"] += r["duplicated"]
            t["unequal"] += not r["equal"]
            print(json.dumps(r), flush=True)
        print(json.dumps(totals, indent=1))
        sys.exit(1 if any(t["lost"] or t["duplicated"] or t["unequal"] for t in totals.values()) else 0)
