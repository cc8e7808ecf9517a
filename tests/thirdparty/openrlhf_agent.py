"""Run OpenRLHF's own rollout executor (SingleTurnAgentExecutor, openrlhf/utils/agent.py) with its
remote reward URL pointing at `caikit serve-reward`; the generation engine is a stand-in that
answers each prompt with the given response (OpenRLHF's vLLM engine needs a GPU). Prints, as JSON,
the reward and score OpenRLHF recorded for each sample.

    python openrlhf_agent.py THIRDPARTY_DIR TOKENIZER_DIR REWARD_URL < samples.json
"""

import asyncio
import json
import sys
from types import SimpleNamespace

sys.path.append(sys.argv[1])

from openrlhf.utils.agent import SingleTurnAgentExecutor  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

tok = AutoTokenizer.from_pretrained(sys.argv[2])
samples = json.load(sys.stdin)


class Engine:
    """Answers with the sample's response and the end-of-turn token, as vLLM's engine would."""

    def __init__(self, response: str):
        self.ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    async def generate(self, prompt_token_ids, params, multi_modal_data=None):
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=self.ids, finish_reason="stop", logprobs=None)])


async def main():
    executor = SingleTurnAgentExecutor(remote_rm_url=sys.argv[3])
    params = SimpleNamespace(max_tokens=64, logprobs=None)
    outs = await asyncio.gather(*[
        executor.execute(tok.apply_chat_template(s["prompt"], tokenize=False, add_generation_prompt=True), "", params, 1024, tok,
                         Engine(s["response"]))
        for s in samples])
    print(json.dumps([{"reward": o["reward"], "scores": o["scores"]} for o in outs]))


asyncio.run(main())
