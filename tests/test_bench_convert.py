"""bench/bench_convert.py --quick runs and both readers agree (no timing asserts)."""
from support.testing import run


def test_bench_convert_quick():
    res = run('bench/bench_convert.py', '--quick')
    assert res.returncode == 0, res.stderr
    assert 'same weights read by both: yes (10 layers)' in res.stdout
    assert 'ratio CaffeFunction / ours: time' in res.stdout
