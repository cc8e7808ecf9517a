"""Memory and time of the commands that read records, at 10k, 100k and 1M records. By hand, not in
`make test` (1M label-shaped records are about 1.6 GB on disk, 5 GB with the shards and outputs).

    .venv/bin/python benchmarks/scale.py [--sizes 10000,100000,1000000] [--dir /tmp/caikit_scale]

Synthetic records shaped like `label` output (a prompt, chosen and rejected answers of a few hundred
characters, a label, principles, provenance with a shard position), and like `redteam` output for
the readers that take completions; the training stages run one step on the test suite's tiny model,
so their figures are data preparation (reading, the Arrow files, TRL's tokenization). Each measurement runs in its own process; the table gives its
wall seconds, peak resident memory (the kernel's ru_maxrss of that process) and peak private
memory (RssAnon, sampled; RSS less the pages of files it maps, such as the training stages' Arrow
data), and the first row what a Python that only imports caikit takes, the floor under every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("the of and to a in is it you that he was for on are with as his they be at one have this from or had by "
         "word but what some we can out other were all there when up use your how said an each she which do their time "
         "if will way about many then them write would like so these her long make thing see him two has look more").split()

READERS = {  # what each stage's reader holds: (the file it reads, the call)
    "redteam: iter_prompts (streamed)": ("labels", "sum(1 for _ in inputs.iter_prompts(PATH))"),
    "revise: iter_completions (streamed)": ("redteam", "sum(1 for _ in inputs.iter_completions(PATH))"),
    "label: iter_pairs (streamed)": ("labels", "sum(1 for _ in inputs.iter_pairs(PATH, {}))"),
    "read_preferences (a list; train-pm before Arrow)": ("labels", "len(inputs.read_preferences(PATH))"),
    "read_completions (a list; sft before Arrow)": ("redteam", "len(inputs.read_completions(PATH))"),
}
VIEW = {  # caikit view: opening a file (its index of byte offsets, then the first page) and one filter over it
    "view: open + first page": "from starlette.testclient import TestClient\nfrom caikit.viewer import app, sources\n"
                               "web = TestClient(app.create_app(sources.Sources([PATH])))\nassert 'class=\"record pair\"' in web.get('/f/0').text",
    "view: a filter over every record": "from caikit.viewer.index import LineIndex, Query, Scan\n"
                                        "scan = Scan(LineIndex(PATH), Query(['label>0.9']))\nscan.wait(10**9, None)\nprint(len(scan.matches))",
}
TRAINING = {  # the training stages end to end, one optimizer step on a tiny model: data preparation is the rest
    "sft: data + 1 step (tiny model)": ("redteam", ["sft", "-i"]),
    "train-pm: data + 1 step (tiny model)": ("labels", ["train-pm", "--eval-split", "0", "--data"]),
}


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def label_record(rng: random.Random, i: int, shards: int) -> dict:
    prompt = [{"role": "user", "content": text(rng, 30)}]
    p = rng.random()
    return {"id": f"{rng.getrandbits(64):016x}-0-1", "prompt": prompt,
            "chosen": [{"role": "assistant", "content": text(rng, 90)}], "rejected": [{"role": "assistant", "content": text(rng, 90)}],
            "label": p, "p_a": p, "principles": [{"id": "harmless-not-preachy", "p_first_order": p, "p_second_order": p, "p": p}],
            "caikit": {"stage": "label", "model": "smollm2-135m-instruct", "backend": "transformers", "seed": 0,
                       "constitution": {"name": "default", "hash": "f86ed2deeb35"}, "principle_ids": ["harmless-not-preachy"],
                       "version": "0.1.0", "shard": {"index": i % shards + 1, "count": shards, "position": i}}}


def write_files(folder: Path, n: int, shards: int = 4) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"labels": folder / "labels.jsonl", "redteam": folder / "redteam.jsonl"}
    shard_paths = [folder / f"labels.{k + 1}-of-{shards}.jsonl" for k in range(shards)]
    if all(p.exists() for p in [*paths.values(), *shard_paths]):
        return {**paths, "shards": shard_paths}
    rng = random.Random(n)
    with paths["labels"].open("w") as labels, paths["redteam"].open("w") as redteam:
        outs = [p.open("w") for p in shard_paths]
        for i in range(n):
            record = label_record(rng, i, shards)
            line = json.dumps(record) + "\n"
            labels.write(line)
            outs[i % shards].write(line)
            redteam.write(json.dumps({"id": record["id"][:16], "prompt": record["prompt"], "completion": record["chosen"],
                                      "caikit": {"stage": "redteam"}}) + "\n")
        for out in outs:
            out.close()
    return {**paths, "shards": shard_paths}


def anonymous_mb(pid: int) -> float:
    """A process's private memory now (RssAnon): its resident memory less the file pages it maps."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def measure(command: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MB, peak private memory in MB, sampled every 0.1 s) of one process.
    RSS counts the pages of memory-mapped files read (Arrow data), which the kernel drops under
    pressure; the private figure is what the process itself holds."""
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    private = 0.0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)  # (0, ...) while it runs
        if pid:
            break
        private = max(private, anonymous_mb(process.pid))
        time.sleep(0.1)
    wall = time.time() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, private


def python(code: str) -> list[str]:
    return [sys.executable, "-c", "from caikit import inputs, outputs\n" + code]


def tiny_model(folder: Path) -> Path:
    """The test suite's 2-layer random-weight Llama (its own 512-token tokenizer)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import build_tiny_model

    path = folder / "tiny-model"
    return path if (path / "config.json").exists() else build_tiny_model(path)


def cases(paths: dict, folder: Path, tiny: Path) -> dict[str, list[str]]:
    caikit = [sys.executable, "-m", "caikit.cli"]
    resume = folder / "resume.jsonl"
    partial = folder / "resume.jsonl.partial"
    if partial.exists():
        partial.unlink()
    os.link(paths["labels"], partial)  # a 1M-line FILE.partial (its lines are whole: nothing is cut)
    found = {
        "inspect": caikit + ["inspect", str(paths["labels"]), "--json"],
        "inspect --where --show 5": caikit + ["inspect", str(paths["labels"]), "--where", "label>0.5", "--show", "5"],
        "merge of 4 shards": caikit + ["merge", *map(str, paths["shards"]), "-o", str(folder / "merged.jsonl"), "-q"],
        "--resume scan of FILE.partial": python(f"print(len(outputs.JsonlWriter({str(resume)!r}, resume=True).done))"),
    }
    for name, (source, call) in READERS.items():
        found[name] = python(f"print({call.replace('PATH', repr(str(paths[source])))})")
    for name, code in VIEW.items():
        found[name] = python(code.replace("PATH", repr(str(paths["labels"]))))
    for name, (source, command) in TRAINING.items():
        found[name] = caikit + [*command, str(paths[source]), "-o", str(folder / "model"), "--overwrite", "--base-model", str(tiny),
                                "--max-steps", "1", "--batch-size", "2", "--max-length", "256", "--device", "cpu", "-q"]
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dir", default="/tmp/caikit_scale")
    parser.add_argument("--only", help="measure only the cases whose name contains this")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    floor = measure(python("pass"))
    print(f"{'python + caikit imports':32} {floor[0]:8.1f} s {floor[1]:8.0f} MB")
    table: dict[str, list[tuple[float, float, float]]] = {}
    for n in sizes:
        folder = Path(args.dir) / str(n)
        paths = write_files(folder, n)
        mb = paths["labels"].stat().st_size / 2**20
        print(f"\n{n} records ({mb:.0f} MB of label records)", flush=True)
        for name, command in cases(paths, folder, tiny_model(Path(args.dir))).items():
            if args.only and args.only not in name:
                continue
            wall, rss, private = measure(command)
            table.setdefault(name, []).append((wall, rss, private))
            print(f"{name:32} {wall:8.1f} s {rss:8.0f} MB peak RSS {private:8.0f} MB private", flush=True)
    print("\n| command | " + " | ".join(f"{n:,} records: s, peak RSS / private MB" for n in sizes) + " | time ratio, last / previous size |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for name, rows in table.items():
        ratio = f"{rows[-1][0] / rows[-2][0]:.1f}" if len(rows) > 1 else "-"
        print(f"| {name} | " + " | ".join(f"{w:.1f} s, {r:.0f} / {p:.0f} MB" for w, r, p in rows) + f" | {ratio} |")


if __name__ == "__main__":
    main()
