# cowctx: every target does its own set-up (a virtual environment in .venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup demo test fuzz bench bench-workloads lint clean report-check

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

setup: $(STAMP) $(VENV)/.system-tools

# Graphviz (cowctx graph renders SVG with it) and Chromium (the report test opens
# the HTML report headless): Debian packages, installed when missing and possible.
$(VENV)/.system-tools: | $(STAMP)
	@if ! command -v dot >/dev/null || ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q graphviz chromium >/dev/null 2>&1 \
	    || (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -q graphviz chromium >/dev/null 2>&1) \
	    || echo "note: could not install graphviz/chromium; those tests will skip"; \
	  else echo "note: graphviz/chromium missing and not installable here; those tests will skip"; fi; \
	fi
	@touch $@

demo: setup
	$(BIN)/cowctx demo

test: setup
	$(BIN)/python -m pytest -q

COVERAGE = $(BIN)/coverage
COVDATA  = --data-file=$(VENV)/coverage-fuzz
COVSRC   = --branch $(COVDATA) --source=src/cowctx/designs,src/cowctx/mm
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/test_stateful.py
	$(BIN)/cowctx fuzz --design anon_vma --steps 200000 --seed 1 --chunk 500
	$(BIN)/cowctx kernel-fuzz --seed 1 --scenarios 2000 || test $$? -eq 3
	@echo "branch coverage of src/cowctx/designs and mm/vma.py (unreached branches: docs/cow-context.md)"
	$(COVERAGE) erase $(COVDATA)
	$(COVERAGE) run $(COVSRC) $(BIN)/cowctx fuzz --design cow_context --steps 100000 --seed 1 --chunk 500
	$(COVERAGE) run --append $(COVSRC) $(BIN)/cowctx fuzz --design anon_vma --steps 100000 --seed 2 --chunk 500
	$(COVERAGE) run --append $(COVSRC) $(BIN)/cowctx run --design cow_context_poc scenarios/poc/*.yaml >/dev/null
	$(COVERAGE) report $(COVDATA) --include='src/cowctx/designs/*,src/cowctx/mm/vma.py' --show-missing
	@echo "the stabilisation race suite, every case on anon_vma and the PoC, bound 2 (matrix: $(VENV)/stabilisation.md; exit 1 = violations found)"
	$(BIN)/cowctx explore --suite stabilisation --design anon_vma,cow_context_poc --max-executions 50000 --schedules $(VENV)/stabilisation --html $(VENV)/stabilisation.html > $(VENV)/stabilisation.md || test $$? -eq 1

bench: setup
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/stabilisation.py

# every workload at 1x and 10x in its own process (about an hour here)
bench-workloads: setup
	$(BIN)/python benchmarks/workloads.py

report-check: setup
	$(BIN)/python -m pytest -q tests/test_report.py --screenshot report-screenshot.png

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
