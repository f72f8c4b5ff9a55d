"""bench/bench_overfit.py --quick: trains from scratch on 2 coco_mini images at 64x64 for 6
iterations and scores them with COCOeval (the machinery; reaching AP 0.5 is the GPU run's)."""
import re

from support.testing import run


def test_quick_overfit_runs_and_prints_the_curve():
    r = run('bench/bench_overfit.py', '--quick')
    assert r.returncode == 1, (r.stdout, r.stderr)  # 6 iterations: the target is not reached
    lines = r.stdout.strip().splitlines()
    assert re.match(r'mobilenet from scratch on 2 images at 64x64 \(\d+ people', lines[0])
    ceiling = re.fullmatch(r'the target maps themselves score AP (\d\.\d{3}) \(the ceiling '
                           r'at this size\)', lines[1])
    assert ceiling and 0 < float(ceiling.group(1)) <= 1, lines[1]
    rows = [[float(v) for v in l.split()] for l in lines if re.match(r'^ +\d+ ', l)]
    assert [int(row[0]) for row in rows] == [0, 3, 6]
    assert all(0 <= row[2] <= 1 for row in rows)
    assert rows[2][1] < rows[1][1]  # the loss falls
    curve = re.findall(r'(\d+): loss ([0-9.]+) AP ([0-9.]+)', lines[-2])
    assert lines[-2].startswith('curve: ') and len(curve) == len(rows), lines[-2]
    for (it, loss, ap), row in zip(curve, rows):
        assert int(it) == row[0] and abs(float(loss) - row[1]) <= 1e-4 and float(ap) == row[2]
    assert re.fullmatch(r'final AP \d\.\d{3} after 6 iterations \(\d+ s\): target 0\.50 not '
                        r'reached', lines[-1]), lines[-1]


def test_bad_size_is_refused():
    r = run('bench/bench_overfit.py', '--size', 100, timeout=60)
    assert r.returncode == 2 and 'multiple of 16' in r.stderr  # argparse's usage + error
