"""bench/bench_convert.py --quick runs and both readers agree (no timing asserts)."""
import os
import subprocess
import sys

from conftest import REPO


def test_bench_convert_quick():
    res = subprocess.run([sys.executable, os.path.join(REPO, 'bench', 'bench_convert.py'),
                          '--quick'], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert 'same weights read by both: yes (10 layers)' in res.stdout
    assert 'ratio CaffeFunction / ours: time' in res.stdout
