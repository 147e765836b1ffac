# The two commands the README shows. Each sets up .venv on a fresh clone if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= dev,ray,medmnist

.PHONY: demo test mutation

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]' || { \
	  echo "note: extras failed to install; retrying without playwright (the browser test will skip)" >&2; \
	  $(BIN)/python -m pip install -q -e '.[ray,medmnist]' 'pytest>=8' 'pytest-timeout>=2.3' 'ruff>=0.5'; }
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/catscans recommend --target demo

test: $(STAMP)
	@$(BIN)/python -m pytest -q -p no:cacheprovider tests

# Mutation testing of the statistical core (mutmut 3; not part of `make test`; ~15 min on 2 cores).
# Modules and tests: [tool.mutmut] in pyproject.toml. Writes artifacts/mutation.json.
mutation: $(STAMP)
	@$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/python -m pip install -q 'mutmut>=3.8,<4'
	@$(BIN)/python benchmarks/mutation.py $(MUTATION_ARGS)
