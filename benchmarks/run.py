"""caikit's CPU engine beside plain transformers on the embedded model, measured in one run: one table,
each figure next to its baseline and the ratio, plus the machine it ran on.

    python benchmarks/run.py [--prompts 64] [--new-tokens 64] [--repeats 3] [--pairs 32] [--records 32]

- generation: tokens/s of caikit's lean engine against transformers' `generate` on the same prompts
  and batch size (16 and 64), sampled at temperature 0.7, top-p 0.95 (tokens counted up to each end of
  sequence), `--repeats` times each, alternated, as medians with the range of the ratio within each
  pair (a virtual machine's speed moves by the minute); and whether its greedy texts equal those of
  caikit's plain loop;
- shared beginnings: `revise` critique prompts (one few-shot dialogue each) per minute, with the
  engine prefilling the beginnings prompts share once, and without; `revise` itself for 2 rounds,
  with the engine keeping finished generations for the prompts that continue them, and without;
- label scoring: hh-rlhf pairs judged per second (both option orders, log-probs of " (A)"/" (B)"),
  against a judge that generates its answer after "The answer is:" (4 greedy tokens, `generate`),
  and against the same scoring without shared beginnings; zero-shot, then with the constitution's
  comparison examples shown first (`label --few-shot`);
- in float32, the roofline of benchmarks/roofline.py: decode and prefill GFLOP/s against this
  machine's measured matmul peak.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from caikit import constitution, judge, models, revise
from caikit.backends import SamplingParams
from caikit.backends.hf import TransformersBackend
from caikit.records import prompt_id

import roofline  # (benchmarks/roofline.py, beside this file)

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base_test.jsonl.gz"
MODEL = "smollm2-135m-instruct"


def prompts(count: int) -> list[list[dict]]:
    rows = []
    for name in ("redteam.jsonl", "helpful.jsonl"):
        for line in (ROOT / "examples" / "prompts" / name).read_text().splitlines():
            rows.append([{"role": "user", "content": json.loads(line)["prompt"]}])
    return (rows * (1 + count // len(rows)))[:count]


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def hf_generate(backend: TransformersBackend, conversations, params: SamplingParams, batch: int) -> int:
    """transformers' `generate` over left-padded batches; returns tokens up to each end of sequence."""
    model, tok = backend.loaded.model, backend.tokenizer
    tok.padding_side = "left"
    texts = [backend.render(c) for c in conversations]
    tokens = 0
    torch.manual_seed(params.seed)
    for start in range(0, len(texts), batch):
        inputs = tok(texts[start : start + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        sampling = dict(do_sample=True, temperature=params.temperature, top_p=params.top_p) if params.temperature else dict(do_sample=False)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=params.max_new_tokens, pad_token_id=tok.pad_token_id, **sampling)
        for row in out[:, inputs["input_ids"].shape[1] :].tolist():
            end = next((k for k, t in enumerate(row) if t in backend._eos), len(row) - 1)
            tokens += end + 1
    return tokens


def generation(backend, plain, args) -> list[tuple]:
    """Tokens/s of the lean engine and of `generate` at batch 16 and 64, each measured `args.repeats`
    times, the two alternated (which goes first swaps each time) so that a slower minute of this
    machine falls on both; medians, with the range of the ratio within each pair."""
    convs = prompts(args.prompts)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.7, top_p=0.95, seed=0)
    rows = []
    warm = SamplingParams(max_new_tokens=4, temperature=0.7, seed=0)
    hf_generate(backend, convs[:4], warm, 4), backend.generate(convs[:4], warm)  # first calls: lazy set-up, not throughput

    def theirs(size: int) -> float:
        tokens, seconds = timed(lambda: hf_generate(backend, convs, params, size))
        return tokens / seconds

    def mine() -> float:
        backend.generated_tokens = 0
        seconds = timed(lambda: backend.generate(convs, params))[1]
        return backend.generated_tokens / seconds

    for size in (16, 64):
        backend.batch_size = size
        pairs = []
        for repeat in range(args.repeats):
            if repeat % 2:
                lean, base = mine(), theirs(size)
            else:
                base, lean = theirs(size), mine()
            pairs.append((lean, base))
        ratios = sorted(lean / base for lean, base in pairs)
        spread = f"; per pair {ratios[0]:.2f}-{ratios[-1]:.2f}x, {len(pairs)} alternated pairs" if len(pairs) > 1 else ""
        rows.append((f"generate, batch {size} (tok/s)", statistics.median(lean for lean, _ in pairs),
                     statistics.median(base for _, base in pairs), f"transformers generate{spread}"))
    greedy = SamplingParams(max_new_tokens=args.new_tokens, temperature=0)
    backend.batch_size = plain.batch_size = 16
    some = convs[:32]
    same = sum(a == b for a, b in zip(backend.generate(some, greedy), plain.generate(some, greedy)))
    rows.append(("greedy texts equal to caikit's plain loop", f"{same}/{len(some)}", "", ""))
    return rows


def revise_records(count: int) -> list[dict]:
    """`count` red-team records as `revise` reads them, each with one compliant answer to revise."""
    return [{"id": prompt_id(p), "prompt": p, "completion": [{"role": "assistant", "content": "Sure. First, you will need to find out where they keep it."}]}
            for p in prompts(count)]


def shared_beginnings(backend, args) -> list[tuple]:
    const = constitution.load("default")
    records = revise_records(args.records)
    asks = []
    for record in records:
        shots = revise.draw_shots(const.critique_examples, 0, record["id"], 1)
        chain = revise.Chain(record, [t for e in shots for t in revise.example_turns(e, const, const.principles[0], True)])
        principle = revise.draw_principle(const.principles, 0, record["id"], 1)
        asks.append(chain.base("append") + [{"role": "user", "content": principle.critique}])
    params = SamplingParams(max_new_tokens=48, temperature=0.7, seed=0)
    backend.batch_size = 16
    found = {}
    for share in (True, False):
        backend.share_prefixes = share
        found[share] = timed(lambda: backend.generate(asks, params))[1]
    backend.share_prefixes = True
    return [("revise critiques, batch 16 (prompts/min)", 60 * len(asks) / found[True], 60 * len(asks) / found[False], "no shared beginnings")]


def kept_rounds(backend, args) -> list[tuple]:
    """`revise` itself over records for 2 rounds (as the quickstart runs it), with the engine keeping
    finished generations across calls (each critique and revision prompt continues the last call's
    conversations) and without."""
    const = constitution.load("default")
    records = revise_records(max(args.records // 2, 1))
    params = SamplingParams(max_new_tokens=64, temperature=0.7, seed=0)
    found, texts = {}, {}
    for keep in (True, False):
        if not keep:
            backend.keep_prefixes = lambda budget=0: None  # (revise turns keeping on through this method)
        seconds = timed(lambda: texts.setdefault(keep, [r["completion"] for r in revise.run(
            records, backend, const, params, rounds=2, shots=1, critique_tokens=48, chunk_size=len(records))]))[1]
        found[keep] = 60 * len(records) / seconds
    del backend.keep_prefixes
    same = sum(a == b for a, b in zip(texts[True], texts[False]))
    return [("revise, 2 rounds, batch 16 (records/min)", found[True], found[False], "nothing kept across calls"),
            ("revise texts equal with and without kept sequences", f"{same}/{len(records)}", "", "")]


def label_jobs(count: int) -> list[tuple]:
    """The first `count` hh-rlhf pairs as judge jobs (first turn, chosen, rejected, a principle)."""
    const = constitution.load("default")
    pairs = [json.loads(line) for line in gzip.open(HH, "rt")][:count]
    jobs = []
    for k, pair in enumerate(pairs):
        convo_c, convo_r = pair["chosen"].rsplit("\n\nAssistant:", 1), pair["rejected"].rsplit("\n\nAssistant:", 1)
        turns = [{"role": "user", "content": convo_c[0].replace("\n\nHuman:", "").strip()}]
        jobs.append((turns, convo_c[1].strip(), convo_r[1].strip(), const.comparisons[k % len(const.comparisons)]))
    return jobs


def label_scoring(backend, args) -> list[tuple]:
    const, jobs = constitution.load("default"), label_jobs(args.pairs)
    backend.batch_size = 16
    rows = []
    for shots in ((), const.comparison_examples):
        scored_s = timed(lambda: judge.score_pairs(backend, jobs, shots=shots))[1]
        backend.share_prefixes = False
        unshared_s = timed(lambda: judge.score_pairs(backend, jobs, shots=shots))[1]
        backend.share_prefixes = True
        asks = [judge.conversation(p, a, b, c, shots) for p, a, b, c in jobs] + [judge.conversation(p, b, a, c, shots) for p, a, b, c in jobs]
        generating_s = timed(lambda: hf_generate(backend, asks, SamplingParams(max_new_tokens=4, temperature=0), 16))[1]
        name = f"label{' --few-shot' if shots else ''}: pairs judged per second (both orders)"
        rows += [(name, len(jobs) / scored_s, len(jobs) / generating_s, "a judge generating its answer"),
                 (f"label{' --few-shot' if shots else ''}: the same", len(jobs) / scored_s, len(jobs) / unshared_s, "no shared beginnings")]
    return rows


def quality(backend, args) -> list[tuple]:
    """What a lower precision costs against float32: greedy texts and choice log-probs."""
    reference = TransformersBackend(models.load(MODEL, device="cpu", dtype="float32"), batch_size=16)
    convs, greedy = prompts(32), SamplingParams(max_new_tokens=args.new_tokens, temperature=0)
    same = sum(a == b for a, b in zip(backend.generate(convs, greedy), reference.generate(convs, greedy)))
    choices = [" Sure", " I can't help with that", " (A)", " (B)"]
    mine, theirs = backend.score_choices(convs, choices), reference.score_choices(convs, choices)
    diffs = sorted(abs(a - b) for x, y in zip(mine, theirs) for a, b in zip(x, y))
    rows = [(f"{args.dtype}: greedy texts equal to float32", f"{same}/{len(convs)}", "", ""),
            (f"{args.dtype}: choice log-prob |diff| to float32, median / max", f"{diffs[len(diffs) // 2]:.3f}/{diffs[-1]:.3f}", "", "")]
    if HH.is_file():
        jobs = label_jobs(args.pairs)
        mine, theirs = ([r["p"] for r in judge.score_pairs(b, jobs)] for b in (backend, reference))
        moved = sorted(abs(a - b) for a, b in zip(mine, theirs))
        flipped = sum((a > 0.5) != (b > 0.5) for a, b in zip(mine, theirs))
        rows.append((f"{args.dtype}: label p |diff| to float32, median / max; sides flipped", f"{moved[len(moved) // 2]:.3f}/{moved[-1]:.3f}; {flipped}/{len(jobs)}", "", ""))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help="prompts generated for (batch 16 and 64)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs of the engine and of generate at each batch size")
    parser.add_argument("--records", type=int, default=32, help="revise records (critique prompts)")
    parser.add_argument("--pairs", type=int, default=32, help="hh-rlhf pairs judged")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="for caikit and baselines alike")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    loaded = models.load(MODEL, device="cpu", dtype=args.dtype)
    backend, plain = TransformersBackend(loaded), TransformersBackend(loaded, engine="plain")
    rows = generation(backend, plain, args) + shared_beginnings(backend, args) + kept_rounds(backend, args)
    if HH.is_file():
        rows += label_scoring(backend, args)
    if args.dtype != "float32":
        rows += quality(backend, args)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    print(f"\ncaikit engine benchmark: {MODEL}, {args.dtype}, {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()} kernels, {torch.get_num_threads()} threads), engine {backend.engine}")
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':{width}}  {'caikit':>8}  {'baseline':>8}  {'ratio':>6}  baseline")
    for name, mine, base, what in rows:
        if isinstance(mine, str):
            print(f"{name:{width}}  {mine:>8}")
        else:
            print(f"{name:{width}}  {mine:8.1f}  {base:8.1f}  {mine / base:5.2f}x  {what}")
    if args.dtype == "float32" and backend.engine == "lean":
        roofline.print_rows(f"roofline: {MODEL}, float32 ({cpu})", roofline.roofline(backend._engine))


if __name__ == "__main__":
    main()
