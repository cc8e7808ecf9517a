"""Does each training stage learn its signal? (`make efficacy`)

A signal known to be real: hh-rlhf human harmlessness pairs (../shared), split by prompt into a
training part and a held-out part. On the embedded model, with short lengths and subsets sized for a
2-core CPU (all sizes are printed and can be changed with the flags):

- train-pm on human pairs: held-out pairwise accuracy with its Wilson interval, margin, ECE, and the
  learning curve (accuracy against training pairs);
- rlaif (RLOO and GRPO) against that PM: mean PM reward of greedy answers to held-out prompts before
  and after, with a bootstrap interval of the paired difference, KL to the start policy (per
  response, from the policy's own samples) and response length;
- rlaif --algo dpo on the training pairs: held-out implicit-reward accuracy before (chance: the
  policy is its reference) and after;
- sft on revise output: held-out loss (per token) on revisions before and after.

Every stage is run through the `caikit` command, as a user would. Prints one table.
    .venv/bin/python benchmarks/efficacy.py [--pairs 320] [--work runs/efficacy]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base_test.jsonl.gz"
CAIKIT = [sys.executable, "-m", "caikit.cli"]
MODEL = "smollm2-135m-instruct"


def caikit(*args, log: Path) -> float:
    started = time.time()
    with open(log, "a") as out:
        out.write(f"$ caikit {' '.join(map(str, args))}\n")
        out.flush()
        done = subprocess.run([*CAIKIT, *map(str, args)], stdout=out, stderr=out)
    if done.returncode:
        sys.exit(f"caikit {args[0]} failed; see {log}")
    return time.time() - started


def first_turn(transcript: str) -> str:
    return transcript.split("\n\nAssistant:")[0].replace("\n\nHuman:", "", 1).strip()


def split(work: Path, pairs: int, held: int, prompts: int, held_prompts: int, seed: int) -> dict:
    """Human pairs split by prompt (a hash of the first human turn): 80% train, 20% held out."""
    from caikit.inputs import split_transcript

    rows = [json.loads(line) for line in gzip.open(HH, "rt")]
    train, test = [], []
    for row in rows:
        chosen, rejected = split_transcript(row["chosen"]), split_transcript(row["rejected"])
        if not chosen or not rejected or not chosen[1] or not rejected[1] or chosen[1] == rejected[1]:
            continue  # a pair needs two different, non-empty responses
        bucket = int(hashlib.sha256(first_turn(row["chosen"]).encode()).hexdigest(), 16) % 5
        (test if bucket == 0 else train).append(row)
    random.Random(seed).shuffle(train)
    files = {"train": work / "train_pairs.jsonl", "held": work / "held_pairs.jsonl",
             "train_prompts": work / "train_prompts.jsonl", "held_prompts": work / "held_prompts.jsonl"}
    write(files["train"], train[:pairs])
    write(files["held"], test[:held])
    write(files["train_prompts"], unique_prompts(train, prompts))
    write(files["held_prompts"], unique_prompts(test, held_prompts))
    return files


def unique_prompts(rows, n):
    seen, out = set(), []
    for row in rows:
        text = first_turn(row["chosen"])
        if text and text not in seen and len(text) < 300:
            seen.add(text)
            out.append({"prompt": text})
    return out[:n]


def write(path: Path, rows: list[dict]):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def bootstrap_mean_diff(diffs: list[float], seed: int = 0, samples: int = 2000) -> tuple[float, float]:
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(samples))
    return means[int(0.025 * samples)], means[int(0.975 * samples) - 1]


def pm_eval(pm_dir: Path, held: Path) -> dict:
    """Held-out pairwise accuracy (Wilson interval), mean margin and ECE of a PM, in one pass."""
    from caikit import inputs
    from caikit.preference_model import PreferenceModel
    from caikit.stats import pair_metrics

    pm = PreferenceModel(pm_dir, device="cpu")
    rows = inputs.read_preferences(str(held))
    rewards = pm.rewards([r["prompt"] + r["chosen"] for r in rows] + [r["prompt"] + r["rejected"] for r in rows])
    return pair_metrics(rewards[: len(rows)], rewards[len(rows):], [1.0] * len(rows))


def greedy_answers(model: str, prompts: list[list[dict]], tokens: int) -> list[str]:
    from caikit.backends import SamplingParams, build

    return build("transformers", model, device="cpu", batch_size=16).generate(prompts, SamplingParams(max_new_tokens=tokens, temperature=0))


def pm_scores(pm_dir: Path, prompts, answers) -> list[float]:
    from caikit.preference_model import PreferenceModel

    return PreferenceModel(pm_dir, device="cpu").rewards([p + [{"role": "assistant", "content": a}] for p, a in zip(prompts, answers)])


def kl_and_length(policy: str, start: str, prompts, tokens: int, seed: int) -> tuple[float, float]:
    """Mean log pi(y|x) - log pi0(y|x) over the policy's own samples (a per-response KL estimate), and
    their mean length in characters."""
    from caikit.backends import SamplingParams, build

    trained = build("transformers", policy, device="cpu", batch_size=16)
    samples = trained.generate(prompts, SamplingParams(max_new_tokens=tokens, temperature=1.0, top_p=1.0, seed=seed))
    mine = trained.score_choices(prompts, [[s] for s in samples])  # the prompt ends with the user turn: scored as generated
    base = build("transformers", start, device="cpu", batch_size=16).score_choices(prompts, [[s] for s in samples])
    kl = sum(a[0] - b[0] for a, b in zip(mine, base)) / len(samples)
    return kl, sum(len(s) for s in samples) / len(samples)


def response_logprobs(model: str, rows: list[dict]) -> list[tuple[float, float]]:
    from caikit.backends import build

    backend = build("transformers", model, device="cpu", batch_size=8)
    scores = backend.score_choices([r["prompt"] for r in rows], [[r["chosen"][0]["content"], r["rejected"][0]["content"]] for r in rows])
    return [(s[0], s[1]) for s in scores]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="runs/efficacy")
    parser.add_argument("--pairs", type=int, default=160, help="human training pairs for train-pm (and DPO)")
    parser.add_argument("--held", type=int, default=400, help="held-out human pairs")
    parser.add_argument("--max-length", type=int, default=192, help="PM and DPO sequence length (tokens)")
    parser.add_argument("--pm-epochs", type=int, default=3)
    parser.add_argument("--curve", default="", help="extra training-set sizes for the PM learning curve, e.g. 40,80 (each costs its own PM)")
    parser.add_argument("--dpo-epochs", type=int, default=1)
    parser.add_argument("--dpo-held", type=int, default=200, help="held-out pairs for DPO's implicit-reward accuracy")
    parser.add_argument("--fit", type=int, default=80, help="training pairs re-scored to show how well PM and DPO fit them")
    parser.add_argument("--prompts", type=int, default=32, help="training prompts for RL")
    parser.add_argument("--held-prompts", type=int, default=100, help="held-out prompts for RL's evaluation")
    parser.add_argument("--rl-steps", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per answer in RL and its evaluation")
    parser.add_argument("--revise", type=int, default=32, help="prompts answered and revised for the SFT check (3/4 train)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not HH.is_file():
        sys.exit(f"{HH} is missing: the benchmark needs ../shared beside the checkout")
    began = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "efficacy.log"
    files = split(work, args.pairs, args.held, args.prompts, args.held_prompts, args.seed)
    rows, seconds = [], {}
    pm_common = ["--base-model", MODEL, "--max-length", args.max_length, "--batch-size", 8, "--lr", "5e-4", "--lora", "--eval-split", 0,
                 "--epochs", args.pm_epochs, "--device", "cpu", "--overwrite", "-q"]

    # 1. train-pm: the PM (and, when asked, a learning curve)
    curve = []
    for n in sorted({*(int(k) for k in args.curve.split(",") if k), args.pairs}):
        part = work / f"train_pairs.{n}.jsonl"
        write(part, [json.loads(line) for line in files["train"].read_text().splitlines()[:n]])
        if not (work / f"pm-{n}" / "caikit_train.json").exists():  # (a rerun keeps the PMs already trained)
            seconds[f"train-pm {n}"] = caikit("train-pm", "-i", part, "-o", work / f"pm-{n}", *pm_common, log=log)
        found = pm_eval(work / f"pm-{n}", files["held"])
        curve.append((n, found["accuracy"], found["accuracy_ci95"]))
    pm_dir = work / f"pm-{args.pairs}"
    fit_part = work / "fit_pairs.jsonl"
    write(fit_part, [json.loads(line) for line in part.read_text().splitlines()[: args.fit]])
    extra, fit = found, pm_eval(pm_dir, fit_part)
    n, acc, ci = curve[-1]
    rows.append(("train-pm: held-out accuracy", f"{acc:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}, n={args.held})",
                 "signal" if ci[0] > 0.5 else "interval includes 0.5: not significant"))
    rows.append(("train-pm: accuracy on its training pairs", f"{fit['accuracy']:.3f} (n={fit['pairs']}; margin {fit['mean_margin']:.3f})", ""))
    if len(curve) > 1:
        rows.append(("train-pm: learning curve (pairs: accuracy)", ", ".join(f"{k}: {a:.3f}" for k, a, _ in curve), ""))
    rows.append(("train-pm: held-out mean margin / ECE", f"{extra['mean_margin']:.3f} / {extra['ece']:.3f}", ""))

    # 2. rlaif RLOO and GRPO against the PM
    held_prompts = [[{"role": "user", "content": json.loads(line)["prompt"]}] for line in files["held_prompts"].read_text().splitlines()]
    before = greedy_answers(MODEL, held_prompts, args.tokens)
    before_scores = pm_scores(pm_dir, held_prompts, before)
    for algo in ("rloo", "grpo"):
        out = work / f"rl-{algo}"
        seconds[f"rlaif {algo}"] = caikit("rlaif", "--policy", MODEL, "--reward", pm_dir, "-i", files["train_prompts"], "--algo", algo,
                                          "--max-steps", args.rl_steps, "--batch-size", 8, "--num-generations", 4,
                                          "--max-new-tokens", args.tokens, "--lr", "2e-5", "--kl-coef", "0.05", "--device", "cpu",
                                          "-o", out, "--overwrite", "-q", log=log)
        after = greedy_answers(str(out), held_prompts, args.tokens)
        after_scores = pm_scores(pm_dir, held_prompts, after)
        diffs = [a - b for a, b in zip(after_scores, before_scores)]
        lo, hi = bootstrap_mean_diff(diffs, args.seed)
        mean = sum(diffs) / len(diffs)
        kl, length = kl_and_length(str(out), MODEL, held_prompts, args.tokens, args.seed)
        report = json.loads((out / "caikit_train.json").read_text())["metrics"]
        rows.append((f"rlaif {algo}: held-out PM reward, before -> after",
                     f"{sum(before_scores) / len(before_scores):.3f} -> {sum(after_scores) / len(after_scores):.3f}; "
                     f"difference {mean:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}, n={len(diffs)})",
                     "signal" if lo > 0 else "interval includes 0: not significant"))
        rows.append((f"rlaif {algo}: KL to start / length / train reward",
                     f"{kl:.3f} nats per response / {length:.0f} chars / {report['reward_start']:.3f} -> {report['reward_end']:.3f}", ""))

    # 3. DPO on the training pairs: implicit-reward accuracy on held-out pairs
    dpo = work / "dpo"
    seconds["rlaif dpo"] = caikit("rlaif", "--policy", MODEL, "--algo", "dpo", "-i", files["train"], "--epochs", args.dpo_epochs,
                                  "--batch-size", 8, "--lora", "--lr", "2e-4", "--kl-coef", "0.1", "--max-length", args.max_length,
                                  "--device", "cpu", "-o", dpo, "--overwrite", "-q", log=log)
    from caikit import inputs, stats
    from caikit.backends import build
    from caikit.rlaif import shorten_prompts

    tok = build("transformers", MODEL, device="cpu").tokenizer
    for name, path, n in (("held-out", files["held"], args.dpo_held), ("training", files["train"], args.fit)):
        pairs = inputs.read_preferences(str(path))[:n]
        shorten_prompts(pairs, tok, args.max_length)  # as DPO saw them in training
        ref, new = response_logprobs(MODEL, pairs), response_logprobs(str(dpo), pairs)
        right = sum((n[0] - r[0]) > (n[1] - r[1]) for n, r in zip(new, ref))
        lo, hi = stats.wilson(right, len(pairs))
        rows.append((f"dpo: {name} implicit-reward accuracy", f"before 0.500 (policy = reference) -> after {right / len(pairs):.3f} "
                     f"(95% CI {lo:.3f}-{hi:.3f}, n={len(pairs)})", "signal" if lo > 0.5 else "interval includes 0.5: not significant"))

    # 4. sft on revise output: held-out loss on revisions
    revise_in = work / "revise_prompts.jsonl"
    write(revise_in, [json.loads(line) for line in files["train_prompts"].read_text().splitlines()[: args.revise]])
    seconds["redteam+revise"] = caikit("redteam", "-i", revise_in, "-o", work / "redteam.jsonl", "--max-new-tokens", 64, "--device", "cpu", "-q", log=log)
    seconds["redteam+revise"] += caikit("revise", "-i", work / "redteam.jsonl", "-o", work / "revise.jsonl", "--rounds", 1, "--no-critique",
                                        "--shots", 1, "--max-new-tokens", 96, "--device", "cpu", "-q", log=log)
    revised = [json.loads(line) for line in (work / "revise.jsonl").read_text().splitlines()]
    cut = len(revised) * 3 // 4
    write(work / "sft_train.jsonl", revised[:cut])
    write(work / "sft_held.jsonl", revised[cut:])
    seconds["sft"] = caikit("sft", "-i", work / "sft_train.jsonl", "--base-model", MODEL, "-o", work / "sft", "--epochs", 3, "--batch-size", 4,
                            "--max-length", 512, "--device", "cpu", "--overwrite", "-q", log=log)
    held_sft = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": r["completion"]} for r in revised[cut:]]
    counts = [len(tok(r["chosen"][0]["content"], add_special_tokens=False)["input_ids"]) for r in held_sft]
    loss = {}
    for name, model in (("before", MODEL), ("after", str(work / "sft"))):
        lp = response_logprobs(model, held_sft)
        loss[name] = -sum(a for a, _ in lp) / sum(counts)
    rows.append(("sft: held-out loss on revisions (nats/token)", f"{loss['before']:.3f} -> {loss['after']:.3f} (n={len(held_sft)} records)",
                 "learned" if loss["after"] < loss["before"] else "did not learn"))

    print(f"\ncaikit efficacy benchmark: {MODEL}, hh-rlhf harmless pairs split by prompt; {args.pairs} training pairs "
          f"(PM: LoRA, last {args.max_length} tokens, {args.pm_epochs} epochs), {args.held} held-out pairs, {len(held_prompts)} held-out prompts, "
          f"RL {args.rl_steps} steps x 8 completions, DPO LoRA {args.dpo_epochs} epoch(s) x {args.pairs} pairs (first {args.max_length} tokens; "
          f"evaluated on {args.dpo_held} held-out pairs, long prompts shortened as in training), "
          f"SFT {cut} revisions x 3 epochs")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:{width}}  {value}{'  [' + note + ']' if note else ''}")
    seconds["all, with evaluation"] = time.perf_counter() - began
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + f"; machine: {os.cpu_count()} CPUs")
    (work / "efficacy.json").write_text(json.dumps({"rows": rows, "curve": curve, "seconds": seconds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
