# synthcl: `make demo` trains and evaluates the scarce-regime recipes (plain and joint); `make test` runs the test suite.
# `make docs` builds the documentation site strictly into site/; `make bench` runs the speed benchmark (lightly installed).
# All build .venv first (torch and torchvision pinned to the pair this project is tested with).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.synthcl-installed
DOCS_STAMP := $(VENV)/.synthcl-docs-installed
BENCH_STAMP := $(VENV)/.synthcl-bench-installed
DEMO_RUN ?= runs/fashion-mnist-scarce
DEMO_JOINT_RUN ?= runs/fashion-mnist-scarce-joint
# Overrides for both demo runs, e.g. DEMO_SET=train.precision=no on a CPU without bf16 instructions
# (the run warns at its start where bf16 is emulated; the speed benchmark's S3 measures what it costs).
DEMO_SET ?=

.PHONY: venv data demo test docs bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools>=77'
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev,metrics]' $(TORCH_PINS)
	touch $(STAMP)

# Fashion-MNIST: Debian's package where apt is available and we are root (no download at run time), otherwise
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

# The scarce regime (0.5% of the images, a width-32 encoder): plain SimCLR and the paper's method (its GAN warmed up inside the
# run, then trained jointly), then the floors (raw pixels, random init), plain and joint side by side on the
# primary metric, with the machine and the minutes each took. Run again after a stop, it continues each run where it
# stopped and reuses a finished one (--auto-resume); `make clean` starts it over.
demo: data
	$(VENV)/bin/synthcl train fashion-mnist-scarce $(DEMO_SET) --out $(DEMO_RUN) --auto-resume
	$(VENV)/bin/synthcl train fashion-mnist-scarce-joint $(DEMO_SET) --out $(DEMO_JOINT_RUN) --auto-resume
	$(VENV)/bin/synthcl eval $(DEMO_RUN) --quiet
	$(VENV)/bin/synthcl eval $(DEMO_RUN) --init pixels --quiet
	$(VENV)/bin/synthcl eval $(DEMO_RUN) --init random --quiet
	$(VENV)/bin/synthcl eval $(DEMO_JOINT_RUN) --quiet
	$(PY) benchmarks/demo.py $(DEMO_RUN) $(DEMO_JOINT_RUN)

test: data
	$(PY) -m pytest -q

# The site (mkdocs-material, API reference by mkdocstrings); every code block on it is a file under
# docs/snippets/ that tests/test_docs.py runs.
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[docs]' $(TORCH_PINS)
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# The speed benchmark as benchmarks/results/speed.md was made (lightly, its S1 peer, installed first); about 15
# minutes on 2 cores. Run it alone: anything else on the machine changes the timings.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[bench]' $(TORCH_PINS)
	touch $(BENCH_STAMP)

bench: data $(BENCH_STAMP)
	$(PY) benchmarks/speed.py --rounds 4 --diffusion-rounds 2

lint: $(STAMP)
	$(PY) -m ruff check synthcl generators tests benchmarks docs/snippets

clean:
	rm -rf $(VENV) runs site .pytest_cache
