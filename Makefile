# fairseq_define: set-up, tests, benchmarks and the demo.
# `make test` and `make demo` install what they need into .venv/ first (idempotent: a second run takes seconds);
# `make lint` checks the code with ruff (ruff.toml), CI's first step.

PYTHON  ?= python3
VENV    ?= .venv
# A GPU user may choose another torch, e.g. TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
TORCH   ?= torch==2.13.0
FAIRSEQ ?= fairseq-fixed==0.12.3.1
RUFF_VERSION := 0.17.6
# what the tests need besides pytest: property-based tests, and test files spread over the cores
TEST_DEPS ?= hypothesis==6.170.17 pytest-xdist==3.8.0
# pytest workers for `make test` (each takes whole test files, so a file's shared fixtures are built once)
TEST_WORKERS ?= auto
DATA    ?= ../shared/data/wikitext-2
BENCH_DIR ?= bench-results

PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
# Pins torch to the installed build so that no later step can replace it (e.g. with a CUDA wheel).
PIN     := $(VENV)/torch-pin.txt
# Re-install when setup.py or the chosen torch/fairseq/test dependencies change (not on every edit of this Makefile).
STAMP   := $(VENV)/.installed-$(shell echo '$(TORCH) $(FAIRSEQ) $(TEST_DEPS)' | md5sum | cut -c1-8)

.PHONY: install lint test test-fast bench gpu-check demo clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	$(PY) -c "import torch; print('torch==' + torch.__version__)" > $(PIN)
	$(PIP) install -q -c $(PIN) numpy cython
	$(PIP) install -q -c $(PIN) --no-build-isolation $(FAIRSEQ)
	$(PIP) install -q -c $(PIN) sacrebleu sentencepiece pytest matplotlib $(TEST_DEPS) ruff==$(RUFF_VERSION)
	$(PIP) install -q -c $(PIN) --no-build-isolation --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: install
	$(PY) -m examples.language_model.wikitext2_demo --data $(DATA)

# ruff only (ruff.toml): needs no torch or fairseq, so it runs before the install; an existing .venv/ without the
# pinned ruff gets it here.
lint:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m ruff --version 2>/dev/null | grep -qx 'ruff $(RUFF_VERSION)' || $(PIP) install -q ruff==$(RUFF_VERSION)
	$(PY) -m ruff check .

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# the unit tests alone (about a minute): leaves out the tests marked slow in pytest.ini (training, fairseq commands)
test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests

bench: install
	mkdir -p $(BENCH_DIR)
	$(PY) -m benchmarks glt --json $(BENCH_DIR)/glt.json
	$(PY) -m benchmarks embedding --data $(DATA) --json $(BENCH_DIR)/embedding.json
	$(PY) -m benchmarks lm --data $(DATA) --cache $(BENCH_DIR)/wikitext-2-bin --json $(BENCH_DIR)/lm.json
	$(PY) -m benchmarks eval --data $(DATA) --cache $(BENCH_DIR)/wikitext-2-bin --json $(BENCH_DIR)/eval.json

# on a CUDA machine, at most 8 minutes: the CUDA tests, GLT in fp32/bf16/fp16, the LM step in bf16, host
# synchronisations per forward and a 300-update training (benchmarks/gpu_check.py); writes one JSON. Without CUDA it
# prints one line and exits 0.
gpu-check: install
	@$(PY) -m benchmarks.gpu_check --data $(DATA) --cache $(BENCH_DIR)/wikitext-2-bin \
		--json docs/results/benchmarks/gpu_check.json

clean:
	rm -rf $(VENV) $(BENCH_DIR) build *.egg-info
