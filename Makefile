# The two commands of the README: `make demo` and `make test`. Both install first (idempotent).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch 2.13.0 by default (an unpinned torch can pull a multi-GB CUDA build).
# `make install TORCH=torch==2.5.1` installs another; a torch already in the venv is kept otherwise.
TORCH ?= torch==2.13.0
DATASETS ?= MNIST FashionMNIST

.PHONY: install data demo test lint clean

install: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ "$(origin TORCH)" = "command line" ] || ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		$(BIN)/pip install --quiet "$(TORCH)"; fi
	$(BIN)/pip install --quiet -e ".[dev,ray]"
	@touch $@

data: $(VENV)/.installed
	@$(BIN)/analoglearn data fetch $(DATASETS) || \
		echo "warning: some datasets could not be fetched ('analoglearn data list' says how to get them)"

# The main job: a Hopfield network trained with CEP on MNIST and a CNN trained with RWP on
# Fashion-MNIST, both evaluated under weight noise, then a report. A rerun skips finished runs.
demo: install
	$(BIN)/analoglearn sweep recipes/demo/demo.yaml --out runs/demo
	$(BIN)/analoglearn report runs/demo --out runs/demo/report
	@echo "demo results: runs/demo (one run directory per model); report: runs/demo/report/report.md"

test: install
	$(BIN)/pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks recipes

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
