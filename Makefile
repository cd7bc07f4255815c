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

# The demo: load a shipped model and check it against onnxruntime, verify individual fairness of a credit
# model (exit 10: the model is unfair, and a replayed counterexample pair is printed), then prove local
# robustness of five MNIST test images (exit 0). Exit codes are echoed rather than stopping make.
demo: $(STAMP)
	$(VENV)/bin/certprune inspect models/mnist_mlp_100x2.onnx
	$(VENV)/bin/certprune verify models/german_small.onnx --property properties/german_fairness_sex.yaml \
		--jobs 2 --quiet; echo "exit code $$?"
	$(VENV)/bin/certprune verify models/mnist_mlp_100x2.onnx --property properties/mnist_robustness.yaml \
		--quiet; echo "exit code $$?"

test: $(STAMP)
	$(PY) -m pytest -n 2 tests

models: $(STAMP)
	$(PY) scripts/train_models.py

clean:
	rm -rf $(VENV)
