import json
import os
import subprocess
import sys

import pytest

import cli
from support.testing import one_line_error


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / 'out.bin'
    with pytest.raises(RuntimeError):
        with cli.atomic_output(str(target)) as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'partial')
            raise RuntimeError('boom')
    assert os.listdir(tmp_path) == []


def test_atomic_output_replaces_on_success(tmp_path):
    target = tmp_path / 'out.bin'
    target.write_bytes(b'old')
    cli.write_bytes_atomic(str(target), b'new')
    assert target.read_bytes() == b'new'
    assert os.listdir(tmp_path) == ['out.bin']


def test_write_json_atomic_round_trips_and_leaves_the_file_on_a_bad_object(tmp_path):
    target = tmp_path / 'out.json'
    cli.write_json_atomic(str(target), {'people': [{'person_id': [-1]}], 'version': 1.3})
    assert json.loads(target.read_text()) == {'people': [{'person_id': [-1]}], 'version': 1.3}
    with pytest.raises(TypeError, match='not JSON serializable'):
        cli.write_json_atomic(str(target), {'x': object()})
    assert json.loads(target.read_text())['version'] == 1.3
    assert os.listdir(tmp_path) == ['out.json']


def test_missing_output_directory_is_user_error(tmp_path):
    with pytest.raises(cli.UserError, match='does not exist'):
        cli.write_bytes_atomic(str(tmp_path / 'nope' / 'x.bin'), b'')


def test_gpu_without_cupy_is_one_line_error():
    code = ('import cli, sys; sys.modules["cupy"] = None\n'
            'cli.run_main(lambda argv: cli.get_array_module(0))')
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    one_line_error(p, 'CuPy')


def test_atomic_output_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        cli.write_bytes_atomic(str(tmp_path / 'o.bin'), b'x')
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / 'o.bin').st_mode & 0o777) == 0o644


def test_output_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    real = tmp_path / 'real.json'
    real.write_text('old')
    os.chmod(real, 0o640)
    link = tmp_path / 'link.json'
    link.symlink_to(real)
    cli.write_bytes_atomic(str(link), b'new')
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == 'new'
    assert (os.stat(real).st_mode & 0o777) == 0o640  # an existing file keeps its mode
    assert sorted(os.listdir(tmp_path)) == ['link.json', 'real.json']  # no temp file left
    # a dangling link: the file it names is created
    (tmp_path / 'dangling').symlink_to(tmp_path / 'created.bin')
    cli.write_bytes_atomic(str(tmp_path / 'dangling'), b'x')
    assert (tmp_path / 'created.bin').read_bytes() == b'x'
    assert (tmp_path / 'dangling').is_symlink()


def test_outputs_that_are_not_regular_files_are_refused(tmp_path):
    """A device node (here one with /dev/full's numbers), a FIFO, a directory, a symlink to
    a device: refused with one line, left as they were."""
    import stat
    from support.testing import full_device
    dev = tmp_path / 'full'
    full_device(dev)
    fifo = tmp_path / 'fifo'
    os.mkfifo(fifo)
    (tmp_path / 'link_to_dev').symlink_to(dev)
    for path, kind in ((dev, 'a character device'), (fifo, 'a FIFO'), (tmp_path, 'a directory'),
                       (tmp_path / 'link_to_dev', 'a character device')):
        with pytest.raises(cli.UserError, match='is %s, not a regular file: refusing' % kind):
            cli.write_bytes_atomic(str(path), b'data')
        with pytest.raises(cli.UserError, match='--out %s: is %s' % (path, kind)):
            cli.check_outputs([('--out', str(path))])
    assert stat.S_ISCHR(os.stat(dev).st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ['fifo', 'full', 'link_to_dev']


def test_check_outputs_same_file_in_any_spelling(tmp_path):
    img = tmp_path / 'a.png'
    img.write_bytes(b'png')
    os.link(img, tmp_path / 'hard.png')
    (tmp_path / 'sym.png').symlink_to(img)
    (tmp_path / 'sub').mkdir()
    for spelling in (img, tmp_path / 'hard.png', tmp_path / 'sym.png',
                     tmp_path / 'sub' / '..' / 'a.png'):
        with pytest.raises(cli.UserError, match=r'--json %s is the same file as --img %s: '
                                                r'writing it would destroy the input'
                                                % (spelling, img)):
            cli.check_outputs([('--out', str(tmp_path / 'o.png')), ('--json', str(spelling))],
                              [('--img', str(img))])
    # two outputs naming one new file: one would be lost
    with pytest.raises(cli.UserError, match='--out .*b.png and --json .*b.png are the same file'):
        cli.check_outputs([('--out', str(tmp_path / 'b.png')),
                           ('--json', str(tmp_path / 'sub' / '..' / 'b.png'))])
    # distinct files, inputs not given or missing: fine
    cli.check_outputs([('--out', str(tmp_path / 'b.png')), ('--json', str(tmp_path / 'b.json')),
                       ('--x', None)], [('--img', str(img)), ('W', None),
                                        ('--v', str(tmp_path / 'missing'))])
    assert img.read_bytes() == b'png' and not (tmp_path / 'b.png').exists()


def test_check_outputs_read_only_place(tmp_path):
    """A read-only file system (a tmpfs mounted ro where we may mount) is refused before any
    work, naming the directory; root's bypass of permission bits does not fool it."""
    ro = tmp_path / 'ro'
    ro.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', str(ro)],
                      capture_output=True).returncode != 0:
        if os.geteuid() == 0:
            pytest.skip('cannot mount a read-only tmpfs here')
        os.chmod(ro, 0o555)  # not root: permission bits do the job
    try:
        with pytest.raises(cli.UserError,
                           match='--out %s: cannot write in %s' % (ro / 'x.png', ro)):
            cli.check_outputs([('--out', str(ro / 'x.png'))])
    finally:
        subprocess.run(['umount', '-l', str(ro)], capture_output=True)


def test_library_stderr_captures_c_level_writes(capfd):
    """What a C library writes to file descriptor 2 (libpng, FFmpeg) is captured, not shown."""
    with cli.library_stderr() as said:
        os.write(2, b'libpng warning: iCCP: known incorrect sRGB profile\n\n')
    assert said == ['libpng warning: iCCP: known incorrect sRGB profile']
    os.write(2, b'after\n')
    assert capfd.readouterr().err == 'after\n'
