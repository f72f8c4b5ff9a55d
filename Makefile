# Two entry points on a fresh machine: `make demo` and `make test`.
# Both build .venv first, for the stack of the Python they run with:
#   Python 3.11      -> pinned:  requirements.txt         (NumPy 1.26, OpenCV 4.10)
#   Python 3.12/3.13 -> current: requirements-current.txt (NumPy 2, OpenCV 4.14)
# PYTHON defaults to the newest of python3.13, python3.12, python3.11 that runs;
# `make demo PYTHON=python3.12` picks one.  Switching Python rebuilds .venv.
SUPPORTED := 3.13 3.12 3.11
PYENV_VERSIONS := $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions
VENV := .venv
PY := $(VENV)/bin/python

# $(call runs,CMD): the real path of the Python CMD starts, or nothing.  A name on PATH
# may be a pyenv shim that fails ("pyenv: python3.12: command not found") unless that
# version is selected, so a candidate counts only if it runs.
runs = $(shell $(1) -c 'import sys; print(sys.executable)' 2>/dev/null)
# $(call find,NAME): NAME if it runs, else pyenv's newest matching pythonX.Y.
find = $(or $(call runs,$(1)),$(firstword $(foreach p,$(shell ls -d $(PYENV_VERSIONS)/$(patsubst python%,%,$(notdir $(1))).*/bin/$(notdir $(1)) 2>/dev/null | sort -rV),$(call runs,$(p)))))

ifdef PYTHON
BASE_PY := $(call find,$(PYTHON))
else
BASE_PY := $(firstword $(foreach v,$(SUPPORTED),$(call find,python$(v))))
PYTHON := $(or $(BASE_PY),python3.11)
endif
PYVER := $(if $(BASE_PY),$(shell $(BASE_PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'))
STACK := $(if $(filter 3.11,$(PYVER)),pinned,$(if $(filter 3.12 3.13,$(PYVER)),current))
REQS := $(if $(filter pinned,$(STACK)),requirements.txt,requirements-current.txt)
ONNX_REQS := $(if $(filter pinned,$(STACK)),requirements-onnx.txt,requirements-current-onnx.txt)
STAMP := $(VENV)/.installed-$(STACK)-$(PYVER)
ONNX_STAMP := $(VENV)/.installed-onnx-$(STACK)-$(PYVER)
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: venv demo test clean onnx mpi which

venv: $(STAMP)

which:
	@echo "$(PYTHON) -> $(or $(BASE_PY),not found) (Python $(or $(PYVER),?), stack $(or $(STACK),unsupported))"

# Chainer 7.8.1 has no wheel: it builds from source with the venv's own setuptools and
# numpy (the stack's pins, installed first), hence --no-build-isolation.
$(STAMP): $(REQS)
	@[ -n "$(BASE_PY)" ] || { echo "error: $(PYTHON) not found or does not run: install Python 3.11, 3.12 or 3.13 (e.g. apt-get install python3.12-venv) or set PYTHON=..." >&2; exit 2; }
	@[ -n "$(STACK)" ] || { echo "error: $(BASE_PY) is Python $(PYVER): this project supports Python 3.11 (pinned stack) and 3.12-3.13 (current stack); set PYTHON=python3.12 or similar" >&2; exit 2; }
	@if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "$(PYVER)" ]; then \
	  echo "$(VENV) is not Python $(PYVER): rebuilding it"; rm -rf $(VENV); fi
	@echo "stack: $(STACK) ($(REQS)), Python $(PYVER) ($(BASE_PY))"
	[ -x $(PY) ] || $(BASE_PY) -m venv $(VENV) || { echo "error: $(BASE_PY) -m venv failed: install its venv module (e.g. apt-get install python$(PYVER)-venv)" >&2; exit 2; }
	$(PIP) $$(grep -E '^(setuptools|wheel|numpy)==' $(REQS))
	$(PIP) --no-build-isolation -r $(REQS)
	$(PY) -c "import compat, chainer, cv2, numpy, pycocotools; print('venv ready: chainer', chainer.__version__, 'numpy', numpy.__version__, 'opencv', cv2.__version__)"
	rm -f $(VENV)/.installed*
	touch $(STAMP)

demo: $(STAMP)
	$(PY) pose_detector.py --img data/000000000785.jpg --out result.png

# The test suite covers the optional onnx backend too, so `make test` installs it.
test: $(STAMP) $(ONNX_STAMP)
	$(PY) -m pytest -q tests

# Optional onnx backend (export_onnx.py, --backend onnx): onnx + onnxruntime into .venv.
onnx: $(ONNX_STAMP)
$(ONNX_STAMP): $(STAMP) $(ONNX_REQS)
	$(PIP) -r $(ONNX_REQS)
	$(PY) -c "import onnx, onnxruntime; print('onnx ready:', onnx.__version__, 'onnxruntime', onnxruntime.__version__)"
	touch $(ONNX_STAMP)

# Multi-process training (ChainerMN over MPI): Debian's Open MPI (apt-get, as root; skipped
# when mpiexec exists), then mpi4py into .venv (the same wheel on both stacks).
mpi: $(STAMP)
	@command -v mpiexec >/dev/null || { [ "$$(id -u)" = 0 ] || { echo "error: mpiexec not found: as root run apt-get install openmpi-bin libopenmpi-dev, then make mpi" >&2; exit 2; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null; }
	$(PIP) -r requirements-mpi.txt
	$(PY) -c "import compat; from mpi4py import MPI; import chainermn; print('mpi ready:', MPI.Get_library_version().splitlines()[0])"

clean:
	rm -rf $(VENV) result.png
