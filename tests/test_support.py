"""The test support itself: the data shipped in tests/data (each file named with its licence
in the README beside it, the very bytes ../shared holds), the tests that need ../shared
(skipped and counted without it, failed in CI mode), and the one-line-error check."""
import os
import subprocess
import sys

import pytest

from support.testing import REPO, SHARED_SKIP, TEST_DATA, one_line_error, run, shared_path

# where each shipped folder came from under ../shared/data
SHARED_COPY = {'coco_mini': 'coco_mini', 'tfpose': 'models'}


def shipped():
    """(folder, file name) of every file under tests/data but the READMEs."""
    return [(d, f) for d in sorted(os.listdir(TEST_DATA))
            for f in sorted(os.listdir(os.path.join(TEST_DATA, d))) if f != 'README.md']


def test_every_shipped_file_has_its_licence_in_the_readme_beside_it():
    assert sorted(os.listdir(TEST_DATA)) == sorted(SHARED_COPY)
    for folder in SHARED_COPY:
        with open(os.path.join(TEST_DATA, folder, 'README.md')) as f:
            readme = f.read()
        assert 'Licence' in readme or 'licence |' in readme, folder
        names = [f for d, f in shipped() if d == folder]
        assert names
        for name in names:
            assert '`%s`' % name in readme, (folder, name)
    # the repository stays small
    assert sum(os.path.getsize(os.path.join(TEST_DATA, d, f)) for d, f in shipped()) < 6e6


def test_shipped_data_is_the_shared_data():
    for folder, name in shipped():
        with open(shared_path(SHARED_COPY[folder], name), 'rb') as a, \
                open(os.path.join(TEST_DATA, folder, name), 'rb') as b:
            assert a.read() == b.read(), (folder, name)


PROBE = '''
from support.testing import shared_path

def test_needs_shared():
    shared_path('images', 'no_such_file.png')

def test_plain():
    pass
'''


def pytest_run(tmp_path, args, **env):
    """pytest in a child process with this suite's conftest (its hooks) loaded as a plugin."""
    return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs', '-p', 'conftest',
                           '-p', 'no:cacheprovider'] + args, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=os.path.join(REPO, 'tests'), **env))


@pytest.mark.parametrize('require', ['', '1'])
def test_missing_shared_data_skips_with_a_count_or_fails_in_ci_mode(tmp_path, require):
    """Without the file a test skips naming it, and the run ends with a line counting such
    skips; with POSE_REQUIRE_SHARED=1 (.ci/run) the test fails instead."""
    (tmp_path / 'shared' / 'data').mkdir(parents=True)
    (tmp_path / 'test_probe.py').write_text(PROBE)
    r = pytest_run(tmp_path, ['test_probe.py'], POSE_SHARED_DIR=str(tmp_path / 'shared'),
                   POSE_REQUIRE_SHARED=require)
    if require:
        assert r.returncode == 1, r.stdout
        assert '1 failed, 1 passed' in r.stdout and 'POSE_REQUIRE_SHARED is set' in r.stdout
    else:
        assert r.returncode == 0, r.stdout
        assert '1 passed, 1 skipped' in r.stdout
        # reported at the test's line that asked for the file
        assert ('SKIPPED [1] test_probe.py:5: ' + SHARED_SKIP
                + 'images/no_such_file.png (not in the repository') in r.stdout, r.stdout
        assert '1 test skipped: they need files under %s' % (tmp_path / 'shared' / 'data') \
            in r.stdout, r.stdout


def test_ci_mode_without_shared_data_stops_at_once(tmp_path):
    (tmp_path / 'test_probe.py').write_text(PROBE)
    r = pytest_run(tmp_path, ['test_probe.py'], POSE_SHARED_DIR=str(tmp_path / 'none'),
                   POSE_REQUIRE_SHARED='1')
    assert r.returncode == 4, (r.stdout, r.stderr)  # pytest's usage error
    assert 'POSE_REQUIRE_SHARED is set but %s does not exist' % (tmp_path / 'none' / 'data') \
        in r.stderr


def fake(returncode, stderr):
    return subprocess.CompletedProcess([], returncode, '', stderr)


def test_one_line_error_accepts_only_one_error_line():
    assert one_line_error(fake(2, 'error: x.png: no such file\n'), 'x.png') == \
        'error: x.png: no such file'
    assert one_line_error(fake(2, 'note: no display; running headless\nerror: bad\n'), 'bad',
                          notes_first=True) == 'error: bad'
    bar = '\r  0%|          | 0/1 [00:00<?, ?frame/s]\r                    \r'
    assert one_line_error(fake(2, 'warning: a.txt: skipped\n' + bar + 'error: bad\n'), 'bad',
                          notes_first=True) == 'error: bad'
    for bad, kw in [(fake(1, 'error: x\n'), {}),              # another exit status
                    (fake(2, 'error: y\n'), {}),              # not naming x
                    (fake(2, 'warning: w\nerror: x\n'), {}),  # a second line
                    (fake(2, 'Traceback (most recent call last):\nerror: x\n'),
                     {'notes_first': True}),
                    (fake(2, 'libpng error: x\nerror: x\n'), {'notes_first': True}),
                    (fake(2, 'warning: w\n' + bar + 'error: x\n'), {}),  # notes not allowed
                    (fake(2, 'x\n'), {}),                     # not an error: line
                    (fake(2, ''), {})]:
        with pytest.raises(AssertionError):
            one_line_error(bad, 'x', **kw)


def test_run_starts_a_repository_script_with_this_python(tmp_path):
    r = run('plot_train_log.py', tmp_path / 'missing', timeout=60)
    one_line_error(r, 'missing', 'no such log file')
    assert run('plot_train_log.py', '--help', cwd=tmp_path).stdout.startswith('usage: ')
