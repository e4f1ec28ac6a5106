# The commands people type. The README shows the same ones.
PYTHON ?= python3
VENV   ?= .venv
DATASET ?= synthetic
BIN     = $(VENV)/bin

.PHONY: setup demo test clean

# Create the virtual environment and install runtime + test requirements (requirements.txt
# ends with `-e .`: the project itself, editable).
setup: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements-dev.txt
	touch $@

# The main job on offline data: set up, prepare data, train, evaluate, serve.
demo: setup
	bash scripts/demo.sh $(DATASET) $(DEMO_ARGS)

# The whole test suite (installs first on a fresh clone).
test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache

# Reliability figures (issue 7): >= 1,000 fuzz requests, 16 clients x 60 s, a Milvus outage;
# writes bench/results/reliability.json (about 10 minutes).
.PHONY: reliability
reliability: setup
	$(BIN)/python bench/reliability.py
