# synthcl: `make demo` trains and evaluates the quickstart recipe; `make test` runs the test suite.
# `make docs` builds the documentation site strictly into site/.
# All build .venv first (torch and torchvision pinned to the pair this project is tested with).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.synthcl-installed
DOCS_STAMP := $(VENV)/.synthcl-docs-installed
DEMO_RUN ?= runs/quickstart
DEMO_JOINT_RUN ?= runs/fashion-mnist-joint

.PHONY: venv data demo test docs lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev,metrics]' $(TORCH_PINS)
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

# Plain SimCLR (quickstart) and the paper's method (a GAN trained jointly, warm-up included), then both
# linear-probe accuracies side by side with a randomly initialised encoder as the floor.
demo: data
	$(VENV)/bin/synthcl train quickstart --out $(DEMO_RUN) --overwrite
	$(VENV)/bin/synthcl train fashion-mnist-joint --out $(DEMO_JOINT_RUN) --overwrite
	$(VENV)/bin/synthcl eval $(DEMO_RUN) --quiet
	$(VENV)/bin/synthcl eval $(DEMO_RUN) --init random --quiet
	$(VENV)/bin/synthcl eval $(DEMO_JOINT_RUN) --quiet
	@$(PY) -c "import json; r = lambda p: json.load(open(p)); \
	a, b, c = r('$(DEMO_RUN)/eval.json'), r('$(DEMO_JOINT_RUN)/eval.json'), r('$(DEMO_RUN)/eval-random.json'); \
	print(); print(f'{\"encoder\":34s} {\"linear top-1\":>12s} {\"kNN top-1\":>10s}'); \
	[print(f'{n:34s} {e[\"linear_top1\"]:12.2f} {e[\"knn_top1\"]:10.2f}') for n, e in \
	(('plain SimCLR (quickstart)', a), ('SimCLR + joint GAN synthesis', b), ('random init', c))]"

test: data
	$(PY) -m pytest -q

# The site (mkdocs-material, API reference by mkdocstrings); every code block on it is a file under
# docs/snippets/ that tests/test_docs.py runs.
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[docs]' $(TORCH_PINS)
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(PY) -m ruff check synthcl generators tests benchmarks

clean:
	rm -rf $(VENV) runs site .pytest_cache
