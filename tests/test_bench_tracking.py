"""bench/bench_tracking.py --quick runs end to end (the metrics themselves are asserted by
tests/test_pose_tracker.py on the full sequences)."""
import os
import re
import subprocess
import sys

from conftest import REPO, shared_path

BENCH = os.path.join(REPO, 'bench', 'bench_tracking.py')


def test_quick_bench_runs():
    r = subprocess.run([sys.executable, BENCH, '--quick', '--coco-dir', shared_path('coco_mini')],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for row, frames in (('pan', 20), ('pan, 10 FPS', 7), ('pan, plain One-Euro', 20)):
        # name, frames, FPS, GT, ID switches, MOTA, IDF1, jitter raw -> smoothed, cut, lag
        assert re.search(r'^%s +%d +\d+ +\d+ +\d+ +[-0-9.]+ +[0-9.]+ +[0-9.]+ -> +[0-9.]+ +\d+ %% '
                         r'+([0-9.]+|nan)$' % (re.escape(row), frames), r.stdout, re.M), r.stdout
    assert 'time per frame: detector' in r.stdout
    assert re.search(r'^targets: ID switches \d+ \(0, pan\): ', r.stdout, re.M), r.stdout


def test_missing_data_is_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, BENCH, '--coco-dir', str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().startswith('error: ')
    assert 'test_coco.json' in r.stderr and 'Traceback' not in r.stderr
