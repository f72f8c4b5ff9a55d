"""bench/bench_accuracy.py --quick: the ablation rows and the cross-validation run end to end
on two coco_mini images at scale 0.5 (no figure asserted but one: the defaults row is the AP
evaluate_coco.py gives)."""
import re

import numpy as np

import evaluate_coco
from support import testing
from support.testing import coco_mini


def run(*args):
    r = testing.run('bench/bench_accuracy.py', '--quick', *args, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_quick_ablation_rows_and_the_defaults_ap():
    out = run()
    rows = {}
    for label in ('defaults', 'flip averaging on', 'sub-pixel peaks off',
                  'close-peak merging off', 'person score coco17 (off: total) off',
                  'OKS NMS off', 'thresholds as before (0.05, 0.05, 8)',
                  'everything off (before issue 20)'):
        m = re.search(r'^%s +([0-9.]+) +([0-9]+) \(([0-9]+)\+([0-9]+)\)' % re.escape(label),
                      out, re.M)
        assert m, (label, out)
        rows[label] = [float(v) for v in m.groups()]
    ids = sorted(evaluate_coco.load_coco(coco_mini('test_coco.json'))
                 .getImgIds())[:2]
    stats = evaluate_coco.evaluate(coco_mini('test_coco.json'),
                                   coco_mini(), scales=[0.5], image_ids=ids,
                                   verbose=False)
    assert abs(rows['defaults'][0] - np.round(stats[0], 3)) < 1e-9


def test_quick_cross_validation():
    out = run('--cv')
    assert '2 images -> 8 views' in out
    for mode in ('total', 'coco17'):
        assert len(re.findall(r'person score %s, image \d+ held out: heatmap_peak_thresh' % mode,
                              out)) == 2
        assert re.search(r'^person score %s: held-out AP \(pooled over folds\) scales 0.5 '
                         r'[0-9.]+$' % mode, out, re.M), out
        assert re.search(r'chosen on all images: heatmap_peak_thresh 0.0\d', out), out
    assert re.search(r'^untuned thresholds, no merging, score total: AP scales 0.5 [0-9.]+$',
                     out, re.M), out
