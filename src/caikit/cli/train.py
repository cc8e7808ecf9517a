"""Training stages: `sft`, `train-pm`, `rlaif` (TRL trainers; the model dir appears when finished)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from caikit.cli.app import command
from caikit.cli.options import (
    BaseModel, ChatTemplate, Constitution, Engine, EvalSplit, FeedbackMode, MaxLength, MaxNewTokens, MinMargin, OutputDir, Overwrite,
    Policy, PrinciplesPerLabel, Quiet, Resume, Temperature, choice, engine, lora, training, with_options,
)
from caikit.errors import CaikitError
from caikit.rlaif import ALGOS
from caikit.training import LoraOptions

Sources = Annotated[list[str], typer.Option("-i", "--input", "--data", help="FILE[:WEIGHT], repeatable: WEIGHT x its size is used.")]


def train_is_main() -> bool:
    from caikit.training import is_main

    return is_main()


def summary(stage: str, output, report: dict, quiet: bool, metrics: dict | None = None) -> None:
    if not quiet and train_is_main():
        from caikit import console, training as train

        console.table(f"caikit {stage} -> {output}", train.summary_rows({**report, "metrics": metrics or report["metrics"]}))


def weighted(specs: list[str] | None, option: str) -> list[tuple[str, float]]:
    from caikit.training import parse_weighted

    return [parse_weighted(spec, option) for spec in specs or []]


@command()
@with_options(training, lora)
def sft(
    input: Annotated[str, typer.Option("-i", "--input", help="Prompt-completion JSONL (e.g. revise output).")],
    output: OutputDir,
    mix: Annotated[Optional[list[str]], typer.Option("--mix", help="FILE:WEIGHT, repeatable: add WEIGHT x len(input) examples from FILE.")] = None,
    base_model: BaseModel = "smollm2-135m-instruct",
    max_length: MaxLength = 1024,
    eval_split: EvalSplit = 0.0,
    chat_template: ChatTemplate = None,
    overwrite: Overwrite = False,
    resume: Resume = False,
    quiet: Quiet = False,
    training: dict = None,
    lora: Optional[LoraOptions] = None,
):
    """Fine-tune on revisions (SL-CAI) with TRL's SFTTrainer; loss on the completion only.

    Writes a plain HF model dir (safetensors, tokenizer, chat template; LoRA merged) that `--model DIR`
    accepts everywhere, plus caikit_train.json (data hashes, counts, hyperparameters, losses, time).
    Default learning rate: 2e-5 full, 2e-4 with --lora. --max-length cuts each example's end;
    --eval-split holds out examples for an eval loss. The paper fine-tunes the *pretrained* model;
    --base-model defaults to the embedded chat model because its pretrained checkpoint is not shipped.

    Example: caikit sft -i runs/sl.jsonl --mix runs/helpful.jsonl:0.5 -o runs/sl-cai --lora
    """
    from caikit import console, sft as stage

    console.setup_logging(quiet)
    mixes = weighted(mix, "--mix")
    options = stage.SftOptions(base_model=base_model, max_length=max_length, eval_split=eval_split, lora=lora, chat_template=chat_template, **training)
    report = stage.run(input, mixes, output, options, overwrite=overwrite, resume=resume, quiet=quiet)
    summary("sft", output, report, quiet)


@command("train-pm")
@with_options(training, lora)
def train_pm(
    input: Sources,
    output: OutputDir,
    base_model: BaseModel = "smollm2-135m-instruct",
    max_length: MaxLength = 1024,
    eval_split: EvalSplit = 0.1,
    center_rewards: Annotated[Optional[float], typer.Option("--center-rewards", min=0.0, help="Coefficient pulling mean rewards to 0.")] = None,
    chat_template: ChatTemplate = None,
    overwrite: Overwrite = False,
    resume: Resume = False,
    quiet: Quiet = False,
    training: dict = None,
    lora: Optional[LoraOptions] = None,
):
    """Train a preference model on soft AI labels (and human pairs) with TRL's RewardTrainer.

    Input: label output and/or human pairs (hh-rlhf {chosen, rejected} transcripts, {prompt, chosen,
    rejected}), as -i FILE[:WEIGHT], repeatable. The loss is the binary cross-entropy between
    sigma(r_chosen - r_rejected) and the soft label, as in the paper; human pairs count as hard labels.
    Reports held-out (--eval-split) pairwise accuracy, mean margin and calibration error (ECE) in
    caikit_train.json. --max-length keeps the last N tokens of each conversation.
    Default learning rate: 1e-5 full, 1e-4 with --lora.

    Example: caikit train-pm -i runs/labels.jsonl -i hh.jsonl.gz:0.1 -o runs/pm
    """
    from caikit import console, pm as stage

    console.setup_logging(quiet)
    sources = weighted(input, "-i/--input")
    options = stage.PmOptions(base_model=base_model, max_length=max_length, eval_split=eval_split, center_rewards=center_rewards,
                              lora=lora, chat_template=chat_template, **training)
    report = stage.run(sources, output, options, overwrite=overwrite, resume=resume, quiet=quiet)
    summary("train-pm", output, report, quiet, stage.summary_metrics(report))


@command()
@with_options(training, lora, engine, batch_size=8)
def rlaif(
    output: OutputDir,
    input: Annotated[
        Optional[list[str]],
        typer.Option("-i", "--input", "--prompts", "--data",
                     help="FILE[:WEIGHT], repeatable: prompts for rloo/grpo (any redteam format), preference pairs for dpo."),
    ] = None,
    policy: Policy = "smollm2-135m-instruct",
    reward: Annotated[
        Optional[str],
        typer.Option("--reward", help="PM_DIR (a caikit train-pm model; scored on decoded text with the PM's own tokenizer) or "
                     "feedback:MODEL (direct RLAIF: the feedback model's debiased probability, in [0, 1], that the response "
                     "is harmless and helpful, or with --feedback-mode vs-reference that it beats the starting policy's greedy answer; "
                     "group: Bradley-Terry strengths among a prompt's completions)."),
    ] = None,
    algo: Annotated[str, choice("--algo", ALGOS, "rloo (default), grpo, or dpo (offline, on preference pairs).")] = "rloo",
    kl_coef: Annotated[float, typer.Option("--kl-coef", help="KL penalty to the starting policy (TRL's beta).")] = 0.05,
    num_generations: Annotated[int, typer.Option("--num-generations", min=2, help="Completions per prompt (group size).")] = 4,
    max_new_tokens: MaxNewTokens = 64,
    temperature: Temperature = 1.0,
    feedback_mode: FeedbackMode = "absolute",
    principles_per_label: PrinciplesPerLabel = 1,
    opponents: Annotated[int, typer.Option("--opponents", min=0, help="--feedback-mode group: other completions of the same prompt each completion is compared with (0: every pair).")] = 4,
    feedback_batch_size: Annotated[int, typer.Option("--feedback-batch-size", min=1, help="--reward feedback:MODEL: prompts (or conversations) per forward pass of the feedback model.")] = 16,
    constitution: Constitution = "default",
    label_smoothing: Annotated[str, typer.Option("--label-smoothing", help="DPO: cDPO label noise, a number or auto (mean 1 - soft label).")] = "0",
    min_margin: MinMargin = 0.0,
    max_length: MaxLength = 1024,
    use_vllm: Annotated[bool, typer.Option("--use-vllm", help="GPU: generate rollouts with vLLM (TRL's use_vllm).", rich_help_panel="vLLM rollouts")] = False,
    vllm_mode: Annotated[str, choice("--vllm-mode", ("colocate", "server"), "colocate: vLLM in the training process; server: a `trl vllm-serve` server.", "mode")] = "colocate",
    vllm_server_url: Annotated[Optional[str], typer.Option("--vllm-server-url", help="--vllm-mode server: the trl vllm-serve URL (default http://localhost:8000).", rich_help_panel="vLLM rollouts")] = None,
    overwrite: Overwrite = False,
    resume: Resume = False,
    quiet: Quiet = False,
    training: dict = None,
    lora: Optional[LoraOptions] = None,
    engine: Engine = None,
):
    """Reinforcement learning from AI feedback: RLOO/GRPO against a preference model with a KL penalty, or DPO.

    --batch-size counts completions per device batch (prompts per step x --num-generations; pairs for
    dpo). --backend/--dtype/--device also apply to the feedback model of --reward feedback:MODEL
    (e.g. --backend vllm on a GPU), which scores --feedback-batch-size prompts per forward pass.
    --max-length (dpo) keeps the first N tokens of prompt + response; long multi-turn prompts lose
    their earliest turns first. Default learning rate: 1e-6. --min-margin (dpo) drops pairs whose
    label is within M of 0.5.

    Examples:
      caikit rlaif --policy runs/sl-cai --reward runs/pm -i runs/redteam.jsonl -i helpful.jsonl:0.5 -o runs/rl-cai
      caikit rlaif --policy runs/sl-cai --reward feedback:smollm2-135m-instruct -i p.jsonl -o runs/rl-direct
      caikit rlaif --policy runs/sl-cai --algo dpo -i runs/labels.jsonl --label-smoothing auto -o runs/dpo
    """
    from dataclasses import replace

    from caikit import console, rlaif as stage, training as train

    console.setup_logging(quiet)
    options = stage.RlOptions(algo=algo, kl_coef=kl_coef, num_generations=num_generations, max_new_tokens=max_new_tokens,
                              temperature=temperature, label_smoothing=label_smoothing, min_margin=min_margin, max_length=max_length, lora=lora,
                              vllm=stage.vllm_settings(use_vllm, vllm_mode, vllm_server_url, engine.vllm_memory), **training)
    stage.check(options)
    sources = weighted(input, "-i/--input")
    reward_fn, described = None, None
    if algo != "dpo":
        if not reward:
            raise CaikitError(f"--algo {algo} needs --reward PM_DIR or --reward feedback:MODEL")
        if not sources:
            raise CaikitError(f"--algo {algo} needs -i/--input FILE (prompts)")
        train.check_output(output, overwrite)
        reward_fn, described = stage.build_reward(reward, policy, sources, options, constitution=constitution, mode=feedback_mode,
                                                  principles=principles_per_label, opponents=opponents, engine=replace(engine, batch_size=feedback_batch_size))
    report = stage.run(policy, output, options, reward=reward_fn, reward_description=described, prompts=sources,
                       overwrite=overwrite, resume=resume, quiet=quiet)
    summary("rlaif", output, report, quiet)
