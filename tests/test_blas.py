"""models/_blas.py and compat.py: NumPy's bundled OpenBLAS bound on both stacks' symbol
names, and the restart with the kernels that fit the CPU (OPENBLAS_CORETYPE) when OpenBLAS
picks generic ones.  Every child process gets a copy of the environment: OPENBLAS_CORETYPE stays as it is
here."""
import os
import subprocess
import sys

import numpy as np
import pytest

import compat
from support.testing import REPO
from models import _blas

# cblas_sgemm (row-major, no transposes) and openblas_get_corename under one naming, in C:
# stands in for each OpenBLAS build NumPy's wheels have bundled.
FAKE_OPENBLAS = r'''
#include <stdint.h>
typedef %(int)s blasint;
void %(p)scblas_sgemm%(s)s(int order, int ta, int tb, blasint m, blasint n, blasint k,
                           float alpha, const float *a, blasint lda, const float *b,
                           blasint ldb, float beta, float *c, blasint ldc) {
    for (blasint i = 0; i < m; i++)
        for (blasint j = 0; j < n; j++) {
            float acc = 0;
            for (blasint q = 0; q < k; q++) acc += a[i * lda + q] * b[q * ldb + j];
            c[i * ldc + j] = alpha * acc + (beta != 0 ? beta * c[i * ldc + j] : 0);
        }
}
const char *%(p)sopenblas_get_corename%(s)s(void) { return "%(core)s"; }
'''


@pytest.mark.parametrize('prefix,suffix,int_c', [
    ('scipy_', '64_', 'int64_t'),  # NumPy 2's scipy-openblas (scipy_cblas_sgemm64_)
    ('', '64_', 'int64_t'),        # NumPy 1.26's openblas64_ (cblas_sgemm64_)
    ('', '', 'int'),               # a plain LP64 OpenBLAS
])
def test_binding_finds_each_naming(tmp_path, monkeypatch, prefix, suffix, int_c):
    """Each naming is found, bound with its integer width and computes through ``gemm``
    (strided views, overwrite and accumulate) what NumPy computes."""
    src = tmp_path / 'fake.c'
    src.write_text(FAKE_OPENBLAS % {'p': prefix, 's': suffix, 'int': int_c,
                                    'core': 'Fake' + prefix + suffix})
    lib = tmp_path / 'libfakeopenblas.so'
    subprocess.run(['cc', '-O1', '-shared', '-fPIC', '-o', str(lib), str(src)], check=True)
    found = compat._find_openblas([str(tmp_path / 'missing.so'), str(lib)])
    assert found is not None and found[1:3] == (prefix, suffix)
    assert compat.openblas_core(found) == 'Fake' + prefix + suffix
    fn, int_t = _blas._find_sgemm(found)
    assert int_t is found[3]
    monkeypatch.setattr(_blas, '_LIB', [(fn, int_t)])
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 9)).astype(np.float32)
    b = rng.standard_normal((9, 30)).astype(np.float32)[:, 4:15]
    c = rng.standard_normal((6, 20)).astype(np.float32)
    c0 = c.copy()
    _blas.gemm(a, b, c[:, 3:14], beta=1.0)
    assert np.allclose(c[:, 3:14], c0[:, 3:14] + a @ b, atol=1e-5)
    assert np.array_equal(c[:, :3], c0[:, :3]) and np.array_equal(c[:, 14:], c0[:, 14:])
    _blas.gemm(a, b, c[:, 3:14])
    assert np.allclose(c[:, 3:14], a @ b, atol=1e-5)


def test_numpys_own_openblas_is_bound():
    """The wheel's library is found under this NumPy's naming (NumPy 2: scipy_ prefix) and
    reports the core that OPENBLAS_CORETYPE asks for (checked in children)."""
    import glob
    if not glob.glob(os.path.join(os.path.dirname(np.__file__), '..', 'numpy.libs',
                                  '*openblas*')):
        pytest.skip('this NumPy build bundles no OpenBLAS (gemm falls back on numpy.matmul)')
    found = compat.openblas()
    assert found is not None and _blas.sgemm() is not None
    assert found[1] == ('scipy_' if int(np.__version__.split('.')[0]) >= 2 else '')
    probe = ('import compat; from models import _blas; print(compat.openblas_core())')
    for coretype in ('Haswell', 'Nehalem'):  # in both stacks' OpenBLAS core lists
        env = dict(os.environ, OPENBLAS_CORETYPE=coretype)
        r = subprocess.run([sys.executable, '-c', probe], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == coretype


AVX2 = {'sse2', 'sse4_2', 'avx', 'avx2', 'fma'}
AVX512 = AVX2 | {'avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl'}


@pytest.mark.parametrize('core,flags,want', [
    ('Prescott', AVX512, 'SkylakeX'),                        # NumPy 1.26 on the Xeons
    ('Katmai', AVX512, 'SkylakeX'),                          # NumPy 2's generic core
    ('Prescott', AVX512 | {'avx512_bf16'}, 'Cooperlake'),
    ('Nehalem', AVX2, 'Haswell'),
    ('Sandybridge', AVX2, 'Haswell'),                        # AVX only, no FMA kernels
    ('Core2', AVX512 - {'avx512vl'}, 'Haswell'),             # not SkylakeX's whole set
    ('Prescott', AVX2 - {'fma'}, None),                      # nothing better to run
    ('Prescott', {'sse2', 'sse3'}, None),
    ('SkylakeX', AVX512, None),                              # already fits
    ('Cooperlake', AVX512, None),
    ('Haswell', AVX2, None),
    ('Zen', AVX2, None),
    ('Haswell', AVX512, None),                               # AVX2 kernels: left alone
    ('neoversen1', set(), None),                             # not x86
    (None, AVX512, None),                                    # no OpenBLAS
])
def test_fitting_coretype(core, flags, want):
    assert compat.fitting_coretype(core, flags) == want


def test_restart_decision_respects_the_user():
    generic = ('Prescott', AVX512)
    coretype, message = compat.blas_restart({}, *generic)
    assert coretype == 'SkylakeX'
    assert 'Prescott' in message and 'OPENBLAS_CORETYPE=SkylakeX' in message
    assert '\n' not in message and 'POSE_BLAS_AUTO=0' in message
    assert compat.blas_restart({'POSE_BLAS_AUTO': '1'}, *generic)[0] == 'SkylakeX'
    assert compat.blas_restart({'POSE_BLAS_AUTO': '0'}, *generic) is None
    assert compat.blas_restart({'OPENBLAS_CORETYPE': 'Prescott'}, *generic) is None  # user's
    assert compat.blas_restart({'OPENBLAS_CORETYPE': 'Haswell'}, *generic) is None
    assert compat.blas_restart({}, 'SkylakeX', AVX512) is None


def test_cpu_flags(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse2 avx2 fma\n\n'
                    'processor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n')
    assert compat.cpu_flags(str(info)) == {'fpu', 'sse2', 'avx2', 'fma'}
    assert compat.cpu_flags(str(tmp_path / 'none')) == set()
    if os.path.exists('/proc/cpuinfo'):
        assert 'fpu' in compat.cpu_flags() or not compat.cpu_flags()


# A command through cli.run_main whose OpenBLAS is made to look generic (as NumPy 1.26's
# does on the Xeons) on an AVX2 CPU, until OPENBLAS_CORETYPE is set: it prints what ran.
RESTART_PROBE = r'''
import os, sys
sys.path.insert(0, %r)
import compat, cli
from models import _blas
print('start', os.getpid())
loaded = compat.openblas_core()  # the kernels this process really loaded
if not os.environ.get('OPENBLAS_CORETYPE'):
    compat.openblas_core = lambda found=None: 'Prescott'
    compat.cpu_flags = lambda path=None: {'avx', 'avx2', 'fma'}
cli.run_main(lambda argv: print(os.getpid(), os.environ.get('OPENBLAS_CORETYPE'), loaded,
                                sys.argv[1:]))
''' % REPO


def run_probe(**env):
    environ = {k: v for k, v in os.environ.items() if k != 'OPENBLAS_CORETYPE'}
    environ.update(env)
    return subprocess.run([sys.executable, '-u', '-c', RESTART_PROBE, 'a b', '--x'],
                          env=environ, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not {'avx2', 'fma'} <= compat.cpu_flags() or compat.openblas() is None,
                    reason='needs an x86 CPU with AVX2 and NumPy\'s bundled OpenBLAS')
def test_command_restarts_once_with_fitting_kernels():
    """A real re-execution: the same process (pid) starts again with the same arguments
    and interpreter flags (-u), now with OpenBLAS running Haswell kernels; one line on
    stderr says so."""
    r = run_probe()
    assert r.returncode == 0, r.stderr
    start1, start2, result = r.stdout.splitlines()
    pid = start1.split()[1]
    assert start1 == start2 == 'start ' + pid
    assert result == "%s Haswell Haswell ['a b', '--x']" % pid
    assert r.stderr.splitlines() == [
        "note: NumPy's OpenBLAS picked its generic Prescott kernels on this AVX2 CPU: "
        "restarting with OPENBLAS_CORETYPE=Haswell (POSE_BLAS_AUTO=0 keeps Prescott)"]
    # turned off, or the user's own choice: no restart, nothing said
    r = run_probe(POSE_BLAS_AUTO='0')
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert len(r.stdout.splitlines()) == 2 and r.stdout.splitlines()[1].split()[1] == 'None'
    r = run_probe(OPENBLAS_CORETYPE='Nehalem')
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert r.stdout.splitlines()[1].split()[1:3] == ['Nehalem', 'Nehalem']
