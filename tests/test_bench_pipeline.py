"""bench/bench_pipeline.py --quick runs end to end on a group photo (no timing asserts: the
figures are for the notes; the bench checks its timed stages find what PoseDetector finds)."""
import re

from support.testing import coco_mini, run


def test_quick_bench_runs():
    r = run('bench/bench_pipeline.py', '--quick', '--img', coco_mini('000000196141.jpg'))
    assert r.returncode == 0, r.stderr
    for row in ('forward', 'resize+smooth', 'peaks', 'grouping', 'after forward'):
        assert re.search(r'^  %s +[0-9.]+ ms +[0-9.]+ %% of forward' % re.escape(row),
                         r.stdout, re.M), r.stdout
    m = re.search(r'(\d+) people, (\d+) peaks \(PoseDetector finds (\d+)\)', r.stdout)
    assert m and int(m.group(1)) == int(m.group(3)) >= 4, r.stdout  # a group photo
