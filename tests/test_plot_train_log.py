"""plot_train_log.py: a LogReport log to a PNG; bad logs are one-line errors."""
import functools
import json
import os

import cv2

from support import testing
from support.testing import one_line_error

run = functools.partial(testing.run, 'plot_train_log.py', timeout=60)  # this module's script


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
    one_line_error(run(str(tmp_path / 'missing')), 'no such log file')
    bad = tmp_path / 'log'
    bad.write_text('[{"iteration": 1,')
    one_line_error(run(str(bad), '--out', str(tmp_path / 'x.png')), 'not a JSON training log')
    bad.write_text('{"a": 1}')
    one_line_error(run(str(bad), '--out', str(tmp_path / 'x.png')), 'not a Chainer LogReport log')
    assert not (tmp_path / 'x.png').exists()


def test_unknown_picture_type_and_null_values(tmp_path):
    """--out x.xyz was matplotlib's traceback after the plotting; a log with null values (a
    NaN loss is written as null) or a null iteration was a traceback too."""
    log = [{'iteration': i, 'main/loss': 10.0 / i, 'main/paf': None if i == 40 else 6.0 / i}
           for i in range(20, 101, 20)]
    log.append({'iteration': None, 'main/loss': 1.0})
    log.append({'iteration': 120, 'main/loss': 0.0, 'main/heat': 'n/a'})
    (tmp_path / 'log').write_text(json.dumps(log))
    one_line_error(run(str(tmp_path / 'log'), '--out', str(tmp_path / 'x.xyz')),
                   "x.xyz: unknown picture type 'xyz' (use one of ", 'png')
    out = tmp_path / 'plot.png'
    p = run(str(tmp_path / 'log'), '--out', str(out))
    assert p.returncode == 0 and p.stderr == '', p.stderr  # no matplotlib warning lines either
    assert 'last iteration 120' in p.stdout
    assert cv2.imread(str(out)).shape[1] > 1.5 * cv2.imread(str(out)).shape[0]  # two panels
    (tmp_path / 'log').write_text(json.dumps([{'iteration': 1, 'main/loss': None}]))
    one_line_error(run(str(tmp_path / 'log'), '--out', str(tmp_path / 'y.png')),
                   'no numbers for any of the keys main/loss')
    assert sorted(os.listdir(tmp_path)) == ['log', 'plot.png']
