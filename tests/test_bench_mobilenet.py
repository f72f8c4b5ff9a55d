"""bench/bench_mobilenet.py --quick runs end to end (no timing asserts: figures are
printed, measured side by side; see the script for the full run)."""
import re

from support.testing import needs_cv2_tensorflow, run


@needs_cv2_tensorflow
def test_quick_bench_runs_and_agrees_with_cv2_dnn():
    r = run('bench/bench_mobilenet.py', '--quick', timeout=120)
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    (row,) = [line for line in r.stdout.splitlines() if 'ratio' in line]
    assert row.startswith(' 432x368')
    ratio = float(re.search(r'ratio ([\d.]+)x', row).group(1))
    diff = float(re.search(r'max\|diff\| ([\d.]+)', row).group(1))
    assert ratio > 0 and diff <= 0.25  # the same network ran on both sides
    assert 'depthwise: C kernel' in r.stdout  # the kernel the figures are about
