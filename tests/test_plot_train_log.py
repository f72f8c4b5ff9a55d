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
