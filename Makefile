# Two entry points on a fresh machine: `make demo` and `make test`.
# Both build .venv from requirements.txt first (Python 3.11).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ONNX_STAMP := $(VENV)/.installed-onnx

.PHONY: venv demo test clean

venv: $(STAMP)

# Chainer 7.8.1 has no wheel: it builds from source with the venv's own
# setuptools (<70) and numpy (<2), hence the two steps.
$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check "setuptools==69.5.1" "wheel==0.43.0" "numpy==1.26.4"
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-build-isolation -r requirements.txt
	$(PY) -c "import chainer, cv2, pycocotools; print('venv ready: chainer', chainer.__version__, 'opencv', cv2.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) pose_detector.py --img data/000000000785.jpg --out result.png

# The test suite covers the optional onnx backend too, so `make test` installs it.
test: $(STAMP) $(ONNX_STAMP)
	$(PY) -m pytest -q tests

# Optional onnx backend (export_onnx.py, --backend onnx): onnx + onnxruntime into .venv.
.PHONY: onnx
onnx: $(ONNX_STAMP)
$(ONNX_STAMP): $(STAMP) requirements-onnx.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-onnx.txt
	$(PY) -c "import onnx, onnxruntime; print('onnx ready:', onnx.__version__, 'onnxruntime', onnxruntime.__version__)"
	touch $(ONNX_STAMP)

# Multi-process training (ChainerMN over MPI): Debian's Open MPI (apt-get, as root; skipped
# when mpiexec exists), then mpi4py into .venv.
.PHONY: mpi
mpi: $(STAMP)
	@command -v mpiexec >/dev/null || { [ "$$(id -u)" = 0 ] || { echo "error: mpiexec not found: as root run apt-get install openmpi-bin libopenmpi-dev, then make mpi" >&2; exit 2; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null; }
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-mpi.txt
	$(PY) -c "from mpi4py import MPI; import chainermn; print('mpi ready:', MPI.Get_library_version().splitlines()[0])"

clean:
	rm -rf $(VENV) result.png
