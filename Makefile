# Two commands do all the set-up on a fresh clone:
#   make demo   creates .venv (pinned requirements.txt, requirements-deploy.txt, requirements-track.txt + this
#               project, editable),
#               generates data/ if missing, trains and evaluates
#   make test   creates .venv if needed and runs the test suite
PYTHON_BASE ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: demo test data bench bccd clean-venv venv

$(VENV)/.installed: requirements.txt requirements-deploy.txt requirements-track.txt pyproject.toml
	$(PYTHON_BASE) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-deploy.txt \
	    -r requirements-track.txt
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PYTHON) tools/demo.py

# A test process killed by a signal (a crash in native code) is named with the test it was running.
test: $(VENV)/.installed
	$(PYTHON) -m pytest -q || { status=$$?; if [ $$status -gt 128 ]; then \
	    echo "the test process died of signal $$((status - 128)) during $$(cat .pytest_cache/last_test_started)" >&2; \
	fi; exit $$status; }

data: $(VENV)/.installed
	$(PYTHON) tools/make_synthetic_dataset.py --output data

bench: $(VENV)/.installed
	$(PYTHON) bench/bench_eval.py
	$(PYTHON) bench/bench_train.py

bccd: $(VENV)/.installed
	$(PYTHON) tools/bccd_run.py

clean-venv:
	rm -rf $(VENV)
