# Two commands on a fresh clone: `make demo` and `make test`; both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean models

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: a range alone would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/certprune inspect models/mnist_mlp_100x2.onnx

test: $(STAMP)
	$(PY) -m pytest -n 2 tests

models: $(STAMP)
	$(PY) scripts/train_models.py

clean:
	rm -rf $(VENV)
