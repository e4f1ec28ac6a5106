# The commands people type. The README shows the same ones.
PYTHON ?= python3
VENV   ?= .venv
DATASET ?= synthetic
BIN     = $(VENV)/bin

.PHONY: setup demo test clean

# Create the virtual environment and install runtime + test requirements.
setup: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements-dev.txt
	$(BIN)/pip install --no-deps -e .
	touch $@

# The main job on offline data: set up, prepare data, train, evaluate, serve.
demo: setup
	bash scripts/demo.sh $(DATASET) $(DEMO_ARGS)

# The whole test suite (installs first on a fresh clone).
test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
