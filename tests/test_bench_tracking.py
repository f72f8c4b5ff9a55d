"""bench/bench_tracking.py --quick runs end to end (the metrics themselves are asserted by
tests/test_pose_tracker.py on the full sequences)."""
import functools
import re

from support import testing
from support.testing import coco_mini

run = functools.partial(testing.run, 'bench/bench_tracking.py')  # this module's script


def test_quick_bench_runs():
    r = run('--quick', '--coco-dir', coco_mini())
    assert r.returncode == 0, r.stderr
    for row, frames in (('pan', 20), ('pan, 10 FPS', 7), ('pan, plain One-Euro', 20)):
        # name, frames, FPS, GT, ID switches, MOTA, IDF1, jitter raw -> smoothed, cut, lag
        assert re.search(r'^%s +%d +\d+ +\d+ +\d+ +[-0-9.]+ +[0-9.]+ +[0-9.]+ -> +[0-9.]+ +\d+ %% '
                         r'+([0-9.]+|nan)$' % (re.escape(row), frames), r.stdout, re.M), r.stdout
    assert 'time per frame: detector' in r.stdout
    assert re.search(r'^targets: ID switches \d+ \(0, pan\): ', r.stdout, re.M), r.stdout


def test_missing_data_is_one_line_error(tmp_path):
    r = run('--coco-dir', tmp_path, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().startswith('error: ')
    assert 'test_coco.json' in r.stderr and 'Traceback' not in r.stderr
