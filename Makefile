# secfed — make demo | make test | make bench
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.secfed-installed
PKGS := secfed protocols privacy attacks evaluations
# expanded once (:=): a recursive ?= re-ran `date` for every use, so the report could look for a
# different second's run directory than the one just written
ifeq ($(origin DEMO_OUT), undefined)
DEMO_OUT := runs/demo-$(shell date +%Y%m%d-%H%M%S)
endif

.PHONY: install demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first, pinned, so that nothing pulls the CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The demo: federated ProtoNet on the Omniglot copy embedded in secfed (no download), 5 sites in
# their own processes, then the untrained model scored on the same test tasks for comparison.
# examples/digits_protonet.toml stays as a seconds-long smoke configuration.
demo: $(STAMP)
	$(PY) -m secfed run examples/omniglot_demo.toml --out $(DEMO_OUT)
	$(PY) examples/untrained_baseline.py $(DEMO_OUT)
	@if $(PY) -c "import evaluations.report" 2>/dev/null; then \
		$(PY) -m secfed report $(DEMO_OUT); \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check $(PKGS) tests
	$(VENV)/bin/ruff format --check $(PKGS) tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy $(PKGS)

unit: $(STAMP)
	$(VENV)/bin/pytest -n 2 --dist loadfile tests

test: lint typecheck unit

bench: $(STAMP)
	$(PY) -m evaluations.bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
