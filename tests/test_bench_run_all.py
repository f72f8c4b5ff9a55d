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


BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench')


def _run_all_module():
    import importlib.util
    path = os.path.join(BENCH, 'run_all.py')
    spec = importlib.util.spec_from_file_location('run_all', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_replace_only_the_run_all_section(tmp_path, monkeypatch, capsys):
    """--results PATH: what the run printed, with the machine, between the markers of
    bench/RESULTS.md; the hand-kept sections stay byte for byte; a failed run writes nothing."""
    import sys
    run_all = _run_all_module()
    shipped = open(os.path.join(BENCH, 'RESULTS.md')).read()
    head, rest = shipped.split(run_all.RESULTS_BEGIN)
    tail = rest.split(run_all.RESULTS_END)[1]
    results = tmp_path / 'RESULTS.md'
    results.write_text(shipped)

    def fake_run(table, rc):
        def run(args):
            print(table)
            return rc
        return run
    for table in ('forward  posenet 368x368  chainer  1.10x', 'second run 0.90x'):
        monkeypatch.setattr(run_all, 'run', fake_run(table, 0))
        assert run_all.main(['--results', str(results)]) == 0
        text = results.read_text()
        assert text.startswith(head) and text.endswith(tail)
        section = text[len(head):len(text) - len(tail)]
        assert section.count(run_all.RESULTS_BEGIN) == section.count(run_all.RESULTS_END) == 1
        assert '```text\n%s\n```' % table in section and 'UTC' in section.splitlines()[1]
    assert 'second run 0.90x' in capsys.readouterr().out  # still printed as it runs
    assert sys.stdout is not None and not hasattr(sys.stdout, 'parts')
    monkeypatch.setattr(run_all, 'run', fake_run('half a table', 2))
    assert run_all.main(['--results', str(results)]) == 2
    assert results.read_text() == text
    fresh = tmp_path / 'new.md'
    monkeypatch.setattr(run_all, 'run', fake_run('t', 0))
    assert run_all.main(['--results', str(fresh)]) == 0
    assert fresh.read_text().startswith(run_all.RESULTS_BEGIN)
