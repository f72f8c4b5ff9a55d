"""bench/bench_mobilenet.py --quick runs end to end (no timing asserts: figures are
printed, measured side by side; see the script for the full run)."""
import os
import re
import subprocess
import sys

from conftest import REPO, needs_cv2_tensorflow


@needs_cv2_tensorflow
def test_quick_bench_runs_and_agrees_with_cv2_dnn():
    r = subprocess.run([sys.executable, os.path.join(REPO, 'bench', 'bench_mobilenet.py'),
                        '--quick'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    (row,) = [line for line in r.stdout.splitlines() if 'ratio' in line]
    assert row.startswith(' 432x368')
    ratio = float(re.search(r'ratio ([\d.]+)x', row).group(1))
    diff = float(re.search(r'max\|diff\| ([\d.]+)', row).group(1))
    assert ratio > 0 and diff <= 0.25  # the same network ran on both sides
    assert 'depthwise: C kernel' in r.stdout  # the kernel the figures are about
