"""Run a caikit stage over N shards as Ray tasks (e.g. against one shared vLLM server), then merge.

    ray start --head                                   # or an existing cluster: RAY_ADDRESS=...
    python examples/scale/ray_shards.py --shards 16 -o runs/labels.jsonl -- \\
        label -i runs/revise.jsonl --feedback-model openai:Qwen/Qwen2.5-7B-Instruct@http://gpu01:8000/v1

Every task writes OUT.I-of-N.jsonl with --resume, so Ray's retries continue a failed shard instead of
starting over; the merge runs once every shard is done.
"""

import argparse
import subprocess

import ray


@ray.remote(num_cpus=1, max_retries=3)
def run_shard(stage: list[str], index: int, count: int, out: str) -> str:
    part = f"{out.removesuffix('.jsonl')}.{index}-of-{count}.jsonl"
    subprocess.run(["caikit", *stage, "--shard", f"{index}/{count}", "-o", part, "--resume", "--quiet"], check=True)
    return part


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--num-cpus", type=int, help="with no cluster to join: the CPUs of the local Ray instance it starts")
    parser.add_argument("stage", nargs=argparse.REMAINDER, help="-- then the caikit command and its options, without -o")
    args = parser.parse_args()
    stage = [a for a in args.stage if a != "--"]
    ray.init(num_cpus=args.num_cpus)  # (joins RAY_ADDRESS's cluster when it is set)
    parts = ray.get([run_shard.remote(stage, i, args.shards, args.output) for i in range(1, args.shards + 1)])
    subprocess.run(["caikit", "merge", *parts, "-o", args.output], check=True)


if __name__ == "__main__":
    main()
