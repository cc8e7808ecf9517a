"""A verl reward manager that scores each sample with `caikit serve-reward`, reading the prompt from
verl's own `raw_prompt`, so the data's `extra_info` need not repeat it. For verl 0.7.1 and later
(read and run against 0.9.1, whose RLHFDataset puts the chat messages in `raw_prompt`):

    reward.reward_manager.source=importlib
    reward.reward_manager.name=CaikitRewardManager
    reward.reward_manager.module.path=<site-packages>/caikit/integrations/verl_manager.py

with no `reward.custom_reward_function.path`. The server's URL in `$CAIKIT_REWARD_URL` and a key in
`$CAIKIT_REWARD_KEY`, as for caikit.integrations.verl. verl loads this file; caikit never imports
it (it imports verl). Each sample is its own request, awaited, so a worker has many in flight and the
server's batcher gathers them; the dataset's `reward_model.ground_truth` goes as the reference.
"""

from __future__ import annotations

from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from caikit.integrations.verl import PROMPT_KEYS, score_async


class CaikitRewardManager(RewardManagerBase):
    def __init__(self, config, tokenizer, compute_score=None, **unused):  # (verl also passes its router's address)
        super().__init__(config, tokenizer, compute_score)

    async def run_single(self, data) -> dict:
        item = data[-1:][0]  # (several sequences of one sample: the last, as verl's naive manager does)
        responses = item.batch["responses"]
        length = int(item.batch["attention_mask"][-responses.shape[-1]:].sum())
        text = await self.loop.run_in_executor(None, lambda: self.tokenizer.decode(responses[:length], skip_special_tokens=True))
        extra = dict(item.non_tensor_batch.get("extra_info") or {})
        prompt = item.non_tensor_batch.get("raw_prompt")
        if prompt is None or not len(prompt):
            prompt = next((extra[k] for k in PROMPT_KEYS if extra.get(k) is not None), None)
        if prompt is None:
            raise ValueError("caikit reward: the sample has no raw_prompt (verl's RLHFDataset sets it) and no prompt in extra_info")
        prompt = prompt if isinstance(prompt, str) else [{"role": m["role"], "content": m["content"]} for m in prompt]
        reference = (item.non_tensor_batch.get("reward_model") or {}).get("ground_truth")
        score = (await score_async([prompt], [text], [reference]))[0]
        return {"reward_score": score, "reward_extra_info": {"caikit_reward": score}}
