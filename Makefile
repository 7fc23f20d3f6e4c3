# One command to run the dashboard, one to run the tests; both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test bench setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

run: setup
	$(PY) -m streamlit run app.py --server.port $(PORT)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) scripts/bench.py

clean:
	rm -rf $(VENV) .pytest_cache
