# The two commands a fresh machine needs: `make demo` and `make test`.
# Each creates .venv when it is missing and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
PYTEST_ARGS ?=

.PHONY: demo test lint format bench clean spec

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Everything: tests, lint and the plot extra (the plot tests draw PNGs too).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,dev,plot]'
	touch $(STAMP) $(DEMO_STAMP)

# The demo needs only Thecal and the `plot` extra (matplotlib draws therapy.png): a
# fresh clone's `make demo` skips installing the test and lint tools.
$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[plot]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/thecal demo

# The firmware's HIL tests run twice: with the firmware in the emulator's process, then
# with it as its own process over a pty (split mode, `--split`).
# Then the traceability matrix (docs/safety-requirements.md): every safety requirement
# needs a passing HIL test, or the run fails.
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --trace-report=.trace/in-process.json $(PYTEST_ARGS)
	$(BIN)/python -m pytest -n auto --split --thecal-split --trace-report=.trace/split.json $(PYTEST_ARGS) \
		tests/test_firmware_hil_*.py examples/scenarios
	$(BIN)/thecal trace --results .trace/in-process.json .trace/split.json > .trace/matrix.txt \
		|| { cat .trace/matrix.txt; exit 1; }
	tail -n 1 .trace/matrix.txt

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/thecal bench codec

# Regenerate protocol/SPEC.md and protocol/vectors.json from the message declarations.
spec: $(STAMP)
	$(BIN)/thecal spec --write
	$(BIN)/python -m tools.dissector --write

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
