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
	$(PY) -m dashboard.auth  # refuses a teacher token too short to hold, saying why
	$(PY) -m streamlit run serve.py --server.port $(PORT)

test: setup
	$(PY) -m pytest

# training speed side by side with the seed (one table), then the dashboard's cost measured in Chromium, then
# quality against seconds since Start for the seed's and the lecture recipes (docs/time_to_quality.md; ~15 min)
bench: setup
	$(PY) scripts/bench.py --markdown
	$(PY) scripts/measure_ui.py
	$(PY) scripts/time_to_quality.py --models gan,vae --seconds 120 --out artifacts/time_to_quality

clean:
	rm -rf $(VENV) .pytest_cache
