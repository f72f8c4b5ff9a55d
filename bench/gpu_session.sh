#!/bin/bash
# The one GPU-machine script: environment, kernel correctness, the speed figures next to
# PyTorch, every CLI with --gpu, a GPU training with snapshot + resume + reload, and the
# README's fine-tune of the shipped model with coco_mini AP before/after.  Each step has its
# own time limit (the whole session stays under SESSION_BUDGET seconds) and a failing step
# does not stop the next; the summary table is printed last.
#
#   here:  bash bench/gpu_prepare.sh                  # fills .gpu/ (wheels, data, anchor)
#   there: bash bench/gpu_session.sh                  # device run, carry [".gpu"]
#   here:  bash bench/gpu_session.sh --cpu            # rehearsal: every step on the CPU
#
# Logs: $OUT/session.log (everything), $OUT/summary.txt, $OUT/bench_gpu.json.
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
CPU=0
[ "${1:-}" = "--cpu" ] && CPU=1
OUT=${OUT:-$(mktemp -d /tmp/gpu-session-out-XXXX)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu-session-XXXX)
LOG=$OUT/session.log
SUMMARY=$OUT/summary.txt
: > "$LOG"
: > "$SUMMARY"
BUDGET=${SESSION_BUDGET:-$( [ $CPU = 1 ] && echo 3000 || echo 340 )}
START=$(date +%s)
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ -d .gpu/shared/data ]; then export POSE_SHARED_DIR=$REPO/.gpu/shared; fi
SHARED=${POSE_SHARED_DIR:-$(cd .. && pwd)/shared}
DATA=$SHARED/data
if [ $CPU = 1 ]; then
    PY=${PY:-$REPO/.venv/bin/python}; GPU=-1
    INSIZE=64; BATCH=2; FT_ITERS=2; TRAIN_MORE=2
else
    PY=python3; GPU=0
    INSIZE=368; BATCH=10; FT_ITERS=60; TRAIN_MORE=10
    if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .gpu/wheels/*.whl >> "$LOG" 2>&1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
fi
G="--gpu $GPU"
# GPU_STEPS picks groups (default all): env check bench clis train finetune overfit
STEPS=" ${GPU_STEPS:-env check bench clis train finetune overfit} "
want() { [[ "$STEPS" == *" $1 "* ]]; }
IMG=$REPO/data/000000000785.jpg
TRAIN=$WORK/bench/train  # bench_gpu.py's real training run (20 iterations, snapshot at 20)
COCO=$WORK/bench/coco    # coco_mini laid out as COCO with ignore masks (bench_gpu.py makes it)

row() {  # name status seconds text
    printf '%-22s %-7s %6s  %s\n' "$1" "$2" "$3" "$4" >> "$SUMMARY"
}

# step NAME LIMIT CMD...: run with a timeout capped by what is left of the budget; output to
# $WORK/NAME.out and the session log; sets RC and ELAPSED.
step() {
    local name=$1 limit=$2; shift 2
    local left=$(( BUDGET - ($(date +%s) - START) - 5 ))
    [ $limit -gt $left ] && limit=$left
    if [ $limit -lt 5 ]; then
        RC=124; ELAPSED=0; echo "== $name: skipped (session budget spent)" | tee -a "$LOG"
        : > "$WORK/$name.out"; return
    fi
    echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$(date +%s%N)
    timeout -k 5 "$limit" "$@" > "$WORK/$name.out" 2>&1
    RC=$?
    local tenths=$(( ($(date +%s%N) - t0) / 100000000 ))
    ELAPSED="$(( tenths / 10 )).$(( tenths % 10 ))"
    cat "$WORK/$name.out" >> "$LOG"
    echo "== $name: rc $RC, ${ELAPSED}s" | tee -a "$LOG"
}
status() { if [ "$RC" = 0 ]; then echo ok; elif [ "$RC" = 124 ]; then echo TIMEOUT; else echo "FAIL$RC"; fi; }
last() { sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$WORK/$1.out" | grep -E "$2" | tail -1 | cut -c1-110; }
errline() { grep -E '^error:|Error|error' "$WORK/$1.out" | tail -1 | cut -c1-110; }
record() {  # name pattern-for-the-figure
    local text; text=$(last "$1" "$2")
    [ "$RC" != 0 ] && text="$text $(errline "$1")"
    row "$1" "$(status)" "$ELAPSED" "$text"
}

# 1. environment (always)
step env 30 bash -c "nvidia-smi -L 2>/dev/null || echo 'no nvidia-smi'; $PY -c \"
import sys, numpy, cv2; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'cv2', cv2.__version__)
import compat, chainer; print('chainer', chainer.__version__)
try:
    import cupy; print('cupy', cupy.__version__, 'devices', cupy.cuda.runtime.getDeviceCount())
except Exception as e: print('cupy: none (%s)' % e)
try:
    import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())
except Exception as e: print('torch: none (%s)' % e)
try:
    import pycocotools; print('pycocotools ok')
except Exception as e: print('pycocotools: none (%s)' % e)
\""
row env "$(status)" "$ELAPSED" "$(grep -E '^GPU 0|no nvidia' "$WORK/env.out" | head -1 | cut -c1-60); $(grep -E '^cupy|^chainer' "$WORK/env.out" | tr '\n' ' ' | cut -c1-60)"

# 2. the kernels against float64 references (fresh inputs, poisoned outputs)
if ! want check; then :
elif [ $CPU = 1 ]; then step check 300 $PY bench/gpu_check.py --cpu; else step check 90 $PY bench/gpu_check.py; fi
if want check; then
    record check 'CHECK_SUMMARY'
    grep -E 'FAIL' "$WORK/check.out" | head -8 | sed 's/^/  /' >> "$SUMMARY"
fi

# 3. speed next to PyTorch (also runs the real training script: 20 iterations into $WORK/bench)
mkdir -p "$WORK/bench"
if want bench; then
    if [ $CPU = 1 ]; then
        step bench 400 $PY bench/bench_gpu.py --cpu --workdir "$WORK/bench" --json "$OUT/bench_gpu.json"
    else
        step bench 180 $PY bench/bench_gpu.py --timeout 100 --workdir "$WORK/bench" --json "$OUT/bench_gpu.json"
    fi
    row bench "$(status)" "$ELAPSED" "$(last bench 'SECTION .* FAILED' || true)"
    grep '^GPU_TABLE' "$WORK/bench.out" | sed 's/^GPU_TABLE /  /' >> "$SUMMARY"
fi

# 4. every CLI with --gpu (issue 15): random-weight CMU nets made on the fly
if want clis; then
step weights 60 $PY -c "
import compat, chainer, sys
from models import get_model_class
for arch in ('posenet', 'facenet', 'handnet'):
    chainer.serializers.save_npz('$WORK/%s.npz' % arch, get_model_class(arch)())
print('random weights written')"
row weights "$(status)" "$ELAPSED" "$(last weights 'written')"
step video 30 $PY -c "
import sys; sys.path.insert(0, 'bench'); import bench_gpu
bench_gpu.make_video('$WORK/v.avi', 30); print('video written')"
step pose_embedded 60 $PY pose_detector.py --img "$IMG" $G --out "$WORK/p.png" --json "$WORK/p.json"
record pose_embedded 'Found'
step pose_posenet 60 $PY pose_detector.py posenet "$WORK/posenet.npz" --img "$IMG" $G --scales 1 --out "$WORK/pp.png"
record pose_posenet 'Found'
step face 60 $PY face_detector.py facenet "$WORK/facenet.npz" --img "$DATA/images/face.png" $G --out "$WORK/f.png"
record face 'Saving|keypoints'
step hand 60 $PY hand_detector.py handnet "$WORK/handnet.npz" --img "$DATA/images/hand.png" $G --out "$WORK/h.png"
record hand 'Saving|keypoints'
step demo 90 $PY demo.py --img "$DATA/images/dinner.png" $G --face-weights "$WORK/facenet.npz" --hand-weights "$WORK/handnet.npz" --out "$WORK/d.png" --json "$WORK/d.json"
record demo 'Found|Saving'
step camera_pose 60 $PY camera_pose_demo.py --video "$WORK/v.avi" --no-display --no-progress --out "$WORK/o.mp4" $G
record camera_pose 'done:'
step camera_face 60 $PY camera_face_demo.py --video "$WORK/v.avi" --no-display --no-progress --weights "$WORK/facenet.npz" $G
record camera_face 'done:'
step eval_shipped 90 $PY evaluate_coco.py --ann "$DATA/coco_mini/test_coco.json" --img-dir "$DATA/coco_mini" $G
record eval_shipped 'keypoint AP'
fi

# 5. GPU training: bench's 20 iterations (snapshot at 20) resumed for TRAIN_MORE more, then the
#    model reloaded by the detector
if { want train || want finetune; } && [ ! -d "$COCO" ]; then
    step coco 90 $PY -c "import sys; sys.path.insert(0, 'bench'); from bench_loader import mini_coco; print(mini_coco('$WORK/bench'))"
fi
if want train; then
[ -f "$TRAIN/log" ] || { step train_first 120 $PY train_coco_pose_estimation.py $G --arch posenet --coco-dir "$COCO" --out "$TRAIN" --iteration $(( CPU == 1 ? 4 : 20 )) --insize $INSIZE --batchsize $BATCH --snapshot-interval 1000 --val-interval 100000 --val-samples 2 --log-interval 2 --loaderjob 4 --no-progress; record train_first '^[0-9]+ +[0-9]+ '; }
step train_resume 90 $PY train_coco_pose_estimation.py $G --arch posenet --coco-dir "$COCO" --out "$TRAIN" --resume "$TRAIN" --iteration $(( (CPU == 1 ? 4 : 20) + TRAIN_MORE )) --insize $INSIZE --batchsize $BATCH --snapshot-interval 1000 --val-interval 100000 --val-samples 2 --log-interval 2 --no-progress
record train_resume '^[0-9]+ +[0-9]+ |resumed from'
LAST_MODEL=$(ls -v "$TRAIN"/model_iter_* 2>/dev/null | tail -1)
step train_reload 60 $PY pose_detector.py posenet "${LAST_MODEL:-$TRAIN/none}" --img "$IMG" $G --scales 1 --out "$WORK/t.png"
record train_reload 'Found'
fi

# 6. issue 21: the README's fine-tune of the shipped model, then coco_mini AP
if want finetune; then
step finetune 150 $PY train_coco_pose_estimation.py $G --arch mobilenet --initmodel models/mobilenet_v2_small.npz --coco-dir "$COCO" --out "$WORK/ft" --insize $INSIZE --batchsize $BATCH --iteration $FT_ITERS --snapshot-interval $FT_ITERS --val-interval 100000 --val-samples 2 --log-interval $(( FT_ITERS / 2 )) --loaderjob 4 --no-progress
record finetune '^[0-9]+ +[0-9]+ '
[ -f "$WORK/ft/log" ] && cp "$WORK/ft/log" "$OUT/finetune_log.json"
step eval_finetuned 90 $PY evaluate_coco.py --ann "$DATA/coco_mini/test_coco.json" --img-dir "$DATA/coco_mini" mobilenet "$WORK/ft/model_iter_$FT_ITERS" $G
record eval_finetuned 'keypoint AP'
fi

# 7. the training helper's overfit run, if it exists
if want overfit && [ -f bench/bench_overfit.py ]; then
    step overfit 150 $PY bench/bench_overfit.py $G
    record overfit '.'
fi

echo "== session: $(( $(date +%s) - START ))s, work dir $WORK" | tee -a "$LOG"
echo
echo "==================== GPU SESSION SUMMARY ($(( $(date +%s) - START )) s) ===================="
cat "$SUMMARY"
