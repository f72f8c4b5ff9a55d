"""bench/run_all.py --quick runs end to end and prints every section of the table (no timing
asserts: the figures are measured side by side; see the script for the full run)."""
import os
import re

from support.testing import needs_cv2_caffe, run


@needs_cv2_caffe
def test_quick_bench_prints_the_table():
    r = run('bench/run_all.py', '--quick')
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    print(out)
    assert 'OPENBLAS_CORETYPE=%s' % os.environ.get('OPENBLAS_CORETYPE', '(unset)') in out
    rows = re.findall(r'^  (\S+ \d+x\d+)\s+(\S+(?: chainer)?)\s+([\d.]+) ms\s+([\d.]+)x', out, re.M)
    paths = {(what.split()[0], path) for what, path, _, _ in rows}
    for need in [('posenet', 'chainer'), ('posenet', 'stock'), ('posenet', 'cv2.dnn'),
                 ('mobilenet', 'chainer'), ('mobilenet', 'cv2.dnn'),
                 ('2-scale', 'chainer'), ('2-scale', 'cv2.dnn')]:
        assert any(p[0] == need[0] and p[1].startswith(need[1]) for p in paths), (need, paths)
    # the same weights ran on every path: outputs agree with cv2.dnn's
    for diff in re.findall(r'max\|diff\|/max\|ref\| ([\d.e+-]+)', out):
        assert float(diff) < 1e-2
    assert re.search(r'peak RSS +\d+ MB', out)
    assert 'PAF grouping' in out and 'convert_model.py' in out
