"""bench/bench_pipeline.py --quick runs end to end on a group photo (no timing asserts: the
figures are for the notes; the bench checks its timed stages find what PoseDetector finds)."""
import re

from support.testing import coco_mini, one_line_error, run


def test_quick_bench_runs():
    r = run('bench/bench_pipeline.py', '--quick', '--img', coco_mini('000000196141.jpg'))
    assert r.returncode == 0, r.stderr
    for row in ('forward', 'resize+smooth', 'peaks', 'grouping', 'after forward'):
        assert re.search(r'^  %s +[0-9.]+ ms +[0-9.]+ %% of forward' % re.escape(row),
                         r.stdout, re.M), r.stdout
    m = re.search(r'(\d+) people, (\d+) peaks \(PoseDetector finds (\d+)\)', r.stdout)
    assert m and int(m.group(1)) == int(m.group(3)) >= 4, r.stdout  # a group photo


def test_without_shared_the_default_is_the_shipped_group_photo(tmp_path, monkeypatch, capsys):
    """A plain clone (no ../shared): no --img runs on coco_mini's five-person image."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench',
                        'bench_pipeline.py')
    spec = importlib.util.spec_from_file_location('bench_pipeline', path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, 'SHARED_IMG', str(tmp_path / 'absent.png'))
    assert os.path.samefile(bench.default_image(), coco_mini('000000197388.jpg'))
    assert bench.main(['--quick']) == 0
    out = capsys.readouterr().out
    assert out.startswith('000000197388.jpg 640x392, embedded mobilenet'), out
    assert 'PoseDetector finds 5)' in out, out  # the five annotated people


def test_missing_image_is_a_one_line_error(tmp_path):
    one_line_error(run('bench/bench_pipeline.py', '--quick', '--img', tmp_path / 'no.png',
                       timeout=60), 'no.png', 'no such file')
