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

# The demo, two stages on the Omniglot copy embedded in secfed (no download), 5 class-disjoint sites
# each in its own process: (1) federated ProtoNet without DP, the headline; (2) the same federation
# with SecAgg+ and record-level DP at epsilon = 8 (examples/omniglot_demo_dp.toml says why and what it
# reaches), attacked by membership inference (2 reference models, 1-round replicas) and audited with
# white-box canaries; then both HTML reports and a summary (examples/demo_summary.py). Every run
# also scores its untrained model on the same test tasks (summary.json: untrained_test_accuracy).
# examples/digits_protonet.toml stays as a seconds-long smoke configuration.
demo: $(STAMP)
	$(PY) -m secfed run examples/omniglot_demo.toml --out $(DEMO_OUT)
	$(PY) -m secfed run examples/omniglot_demo_dp.toml --out $(DEMO_OUT)-dp
	$(PY) -m secfed attack $(DEMO_OUT)-dp --attack mia --references 2 --rounds 1
	$(PY) -m secfed attack $(DEMO_OUT)-dp --attack whitebox-audit
	$(PY) -m secfed report $(DEMO_OUT)
	$(PY) -m secfed report $(DEMO_OUT)-dp
	$(PY) examples/demo_summary.py $(DEMO_OUT) $(DEMO_OUT)-dp

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
