# synthcl: `make demo` trains and evaluates the quickstart recipe; `make test` runs the test suite.
# Both build .venv first (torch and torchvision pinned to the pair this project is tested with).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.synthcl-installed
DEMO_RUN ?= runs/quickstart

.PHONY: venv data demo test lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev]' $(TORCH_PINS)
	touch $(STAMP)

# Fashion-MNIST: Debian's package where apt is available (no download at run time), otherwise
# torchvision's download into ~/.cache/synthcl.
data: $(STAMP)
	@if [ -d /usr/share/datasets/fashion-mnist ] || [ -n "$$SYNTHCL_DATA" ]; then \
		echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| $(PY) -c "from synthcl.data import resolve_root; print(resolve_root('fashion-mnist', None, download=True))"; \
	else \
		$(PY) -c "from synthcl.data import resolve_root; print(resolve_root('fashion-mnist', None, download=True))"; \
	fi

demo: data
	$(VENV)/bin/synthcl train quickstart --out $(DEMO_RUN) --overwrite
	$(VENV)/bin/synthcl eval $(DEMO_RUN)
	$(VENV)/bin/synthcl eval $(DEMO_RUN) --init random

test: data
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check synthcl generators tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
