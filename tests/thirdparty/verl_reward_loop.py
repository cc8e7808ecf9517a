"""Run verl's own reward loop (RewardLoopWorker, as its trainer's reward workers do, without Ray)
over a small batch scored by `caikit serve-reward`; print the rewards as JSON.

    python verl_reward_loop.py THIRDPARTY_DIR TOKENIZER_DIR naive|manager < samples.json

Samples: [{"prompt": [{role, content}], "response": str}]. `naive`: verl's naive manager calling
caikit.integrations.verl.compute_score_async, the prompt in extra_info; `manager`: caikit's
CaikitRewardManager loaded by verl's importlib source, the prompt in raw_prompt only. The
configuration is verl's own reward.yaml with the overrides a user writes on the command line.
"""

import json
import sys
from pathlib import Path

sys.path.append(sys.argv[1])  # (after the project's packages: verl's copies never shadow them)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import verl  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker  # noqa: E402

import caikit.integrations  # noqa: E402

tokenizer_dir, mode = sys.argv[2], sys.argv[3]
samples = json.load(sys.stdin)
here = Path(caikit.integrations.__file__).parent
overrides = {
    "naive": [f"reward.custom_reward_function.path={here / 'verl.py'}", "reward.custom_reward_function.name=compute_score_async",
              "reward.reward_manager.name=naive"],
    "manager": ["reward.reward_manager.source=importlib", "reward.reward_manager.name=CaikitRewardManager",
                f"reward.reward_manager.module.path={here / 'verl_manager.py'}"],
}[mode]
config = OmegaConf.create({"reward": OmegaConf.load(Path(verl.__file__).parent / "trainer/config/reward/reward.yaml"),
                           "actor_rollout_ref": {"model": {"path": tokenizer_dir, "tokenizer_path": None}}})
config.merge_with_dotlist(overrides)

tok = AutoTokenizer.from_pretrained(tokenizer_dir)
prompts = [tok(tok.apply_chat_template(s["prompt"], tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"] for s in samples]
responses = [tok(s["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for s in samples]
width_p, width_r = max(map(len, prompts)), max(map(len, responses)) + 2  # (padding after each response, as a rollout leaves it)
pad = tok.pad_token_id
prompt_ids = torch.tensor([[pad] * (width_p - len(p)) + p for p in prompts])  # left-padded, as verl's rollout is
response_ids = torch.tensor([r + [pad] * (width_r - len(r)) for r in responses])
mask = torch.tensor([[0] * (width_p - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (width_r - len(r)) for p, r in zip(prompts, responses)])
extra = [{"prompt": s["prompt"]} if mode == "naive" else {} for s in samples]
data = DataProto.from_dict(
    tensors={"prompts": prompt_ids, "responses": response_ids, "input_ids": torch.cat([prompt_ids, response_ids], 1), "attention_mask": mask},
    non_tensors={"data_source": np.array(["caikit"] * len(samples), dtype=object),
                 "reward_model": np.array([{"ground_truth": None, "style": "model"} for _ in samples], dtype=object),
                 "extra_info": np.array(extra, dtype=object),
                 "raw_prompt": np.array([s["prompt"] for s in samples] + [None], dtype=object)[:-1]},
)
worker = RewardLoopWorker(config)
found = worker.loop.run_until_complete(worker.compute_score_batch(data))  # (the loop verl made for its managers, as in its Ray actor)
scores = worker.reward_manager.assemble_rm_scores(data, [f["reward_score"] for f in found])  # what the trainer takes
print(json.dumps({"rewards": [f["reward_score"] for f in found], "rm_scores_sum": scores.sum(-1).tolist(),
                  "manager": type(worker.reward_manager).__name__}))
