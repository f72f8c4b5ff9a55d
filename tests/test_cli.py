import os
import subprocess
import sys

import pytest

import cli


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


def test_missing_output_directory_is_user_error(tmp_path):
    with pytest.raises(cli.UserError, match='does not exist'):
        cli.write_bytes_atomic(str(tmp_path / 'nope' / 'x.bin'), b'')


def test_gpu_without_cupy_is_one_line_error():
    code = ('import cli, sys; sys.modules["cupy"] = None\n'
            'cli.run_main(lambda argv: cli.get_array_module(0))')
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.returncode == 2
    assert p.stderr.count('\n') == 1 and 'CuPy' in p.stderr


def test_atomic_output_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        cli.write_bytes_atomic(str(tmp_path / 'o.bin'), b'x')
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / 'o.bin').st_mode & 0o777) == 0o644
