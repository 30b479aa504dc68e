# make train: train the tutorial's LeNet (ARGS="--epochs 1" passes flags); make app: serve the web page on the
# trained model (http://127.0.0.1:7860); make test: run the tests.
# Each creates .venv with CPython 3.10, the one Python both oneflow 0.9.0 (3.7-3.10) and gradio 6 (3.10 and up)
# run on, and installs requirements.txt.
VENV := .venv
PYTHON := $(VENV)/bin/python

.PHONY: train app test
train: $(VENV)/.installed
	$(PYTHON) lenet_train.py $(ARGS)

app: $(VENV)/.installed
	$(PYTHON) lenet_app.py $(ARGS)

test: $(VENV)/.installed
	$(PYTHON) -m pytest -q -rs --durations=25 tests $(ARGS)

# Each candidate is run, not just looked up: a pyenv shim exists even for versions it will not run.
$(VENV)/.installed: requirements.txt $(wildcard oneflow_native/*.c oneflow_native/*.cpp oneflow_native/*.py oneflow_native/*.toml oneflow_native/glog/*.h)
	@if [ ! -x $(PYTHON) ]; then \
	  for candidate in python3.10 python3 python \
	      $$(ls -d "$$(pyenv root 2>/dev/null)"/versions/3.10*/bin/python 2>/dev/null); do \
	    if $$candidate -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then \
	      echo "creating $(VENV) with $$($$candidate --version 2>&1) ($$candidate)"; \
	      $$candidate -m venv $(VENV) || exit 1; break; \
	    fi; \
	  done; \
	  [ -x $(PYTHON) ] || { echo "error: no Python 3.10 found; oneflow 0.9.0 runs on CPython 3.7 to 3.10 and gradio 6 on 3.10 and up (install 3.10, e.g. 'pyenv install 3.10')" >&2; exit 1; }; \
	fi
	$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@
