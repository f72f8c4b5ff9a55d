#!/bin/bash
# Fill .gpu/ (git-ignored) with what bench/gpu_session.sh needs on the GPU machine, which has
# no Chainer, no pycocotools and no network: their wheels, the shared test data it reads and
# PyTorch's anchor script.  Run here, from the repository root:  bash bench/gpu_prepare.sh
# Then run the session there with carry [".gpu"] (see bench/gpu_session.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${POSE_SHARED_DIR:-$(cd .. && pwd)/shared}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
rm -rf .gpu
mkdir -p .gpu/wheels .gpu/shared/data .gpu/shared/tools
# Chainer 7.8.1 is an sdist: build its py3-none-any wheel here (~1 MB)
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .gpu/wheels chainer==7.8.1
# pycocotools for the machine's Python 3.12 (evaluate_coco.py)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels pycocotools
# Chainer's own needs, in case the image lacks one (pkg_resources: setuptools < 81)
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .gpu/wheels "setuptools<81" six filelock
cp -r "$SHARED/data/coco_mini" .gpu/shared/data/
mkdir -p .gpu/shared/data/images
cp "$SHARED"/data/images/{dinner,face,hand,person}.png .gpu/shared/data/images/
cp "$SHARED/tools/gpu_anchor_torch.py" .gpu/shared/tools/
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
ls .gpu/wheels
du -sh .gpu
