"""plot_train_log.py: a LogReport log to a PNG; bad logs are one-line errors."""
import json
import os
import subprocess
import sys

import cv2

from conftest import REPO

SCRIPT = os.path.join(REPO, 'plot_train_log.py')


def run(*args):
    return subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True,
                          timeout=60)


def test_log_to_png(tmp_path):
    log = [{'iteration': i, 'main/loss': 10.0 / i, 'main/paf': 6.0 / i, 'main/heat': 4.0 / i}
           for i in range(20, 201, 20)]
    log[4]['validation/main/loss'] = 1.0
    (tmp_path / 'log').write_text(json.dumps(log))
    out = tmp_path / 'plot.png'
    p = run(str(tmp_path), '--out', str(out))  # the out directory works too
    assert p.returncode == 0, p.stderr
    assert 'last iteration 200' in p.stdout
    img = cv2.imread(str(out))
    assert img.shape[1] > 2 * img.shape[0]  # three panels side by side
    assert sorted(os.listdir(tmp_path)) == ['log', 'plot.png']  # no temporary file left


def test_bad_logs(tmp_path):
    p = run(str(tmp_path / 'missing'))
    assert p.returncode == 2 and p.stderr.count('\n') == 1 and 'no such log file' in p.stderr
    bad = tmp_path / 'log'
    bad.write_text('[{"iteration": 1,')
    p = run(str(bad), '--out', str(tmp_path / 'x.png'))
    assert p.returncode == 2 and p.stderr.count('\n') == 1 and 'not a JSON training log' in p.stderr
    bad.write_text('{"a": 1}')
    p = run(str(bad), '--out', str(tmp_path / 'x.png'))
    assert p.returncode == 2 and 'not a Chainer LogReport log' in p.stderr
    assert not (tmp_path / 'x.png').exists()


def test_unknown_picture_type_and_null_values(tmp_path):
    """--out x.xyz was matplotlib's traceback after the plotting; a log with null values (a
    NaN loss is written as null) or a null iteration was a traceback too."""
    log = [{'iteration': i, 'main/loss': 10.0 / i, 'main/paf': None if i == 40 else 6.0 / i}
           for i in range(20, 101, 20)]
    log.append({'iteration': None, 'main/loss': 1.0})
    log.append({'iteration': 120, 'main/loss': 0.0, 'main/heat': 'n/a'})
    (tmp_path / 'log').write_text(json.dumps(log))
    p = run(str(tmp_path / 'log'), '--out', str(tmp_path / 'x.xyz'))
    assert p.returncode == 2 and p.stderr.count('\n') == 1, p.stderr
    assert "x.xyz: unknown picture type 'xyz' (use one of " in p.stderr and 'png' in p.stderr
    out = tmp_path / 'plot.png'
    p = run(str(tmp_path / 'log'), '--out', str(out))
    assert p.returncode == 0 and p.stderr == '', p.stderr  # no matplotlib warning lines either
    assert 'last iteration 120' in p.stdout
    assert cv2.imread(str(out)).shape[1] > 1.5 * cv2.imread(str(out)).shape[0]  # two panels
    (tmp_path / 'log').write_text(json.dumps([{'iteration': 1, 'main/loss': None}]))
    p = run(str(tmp_path / 'log'), '--out', str(tmp_path / 'y.png'))
    assert p.returncode == 2 and p.stderr.count('\n') == 1, p.stderr
    assert 'no numbers for any of the keys main/loss' in p.stderr
    assert sorted(os.listdir(tmp_path)) == ['log', 'plot.png']
