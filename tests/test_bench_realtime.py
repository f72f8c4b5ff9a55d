"""bench/bench_realtime.py --quick runs end to end (no timing asserts: the figures are for the
notes; the bench itself checks that every loop processed every frame)."""
from support.testing import run


def test_quick_bench_runs():
    r = run('bench/bench_realtime.py', '--quick')
    assert r.returncode == 0, r.stderr
    for row in ('network forward alone', 'detector call', 'demo loop (decode', 'demo loop + --out',
                'loop machinery alone', 'drawing the poses',
                'loop overhead beyond the forward (paired)', 'demo loop --no-track --no-smooth',
                'tracking + smoothing (1 person): PoseTracker.update is '):
        assert row in r.stdout, r.stdout
    assert '432x368 frames, headless, 4 frames x 2 rounds' in r.stdout
