"""The CPU inference kernels (models/_fast.py; the MobileNet's depthwise convolution of
models/_mobilenet_fast.py and its C kernel, built by models/_native.py) compute what stock
Chainer computes.

Inference (``train=False`` + ``no_backprop_mode``, NumPy input) takes the fast
kernels; any forward that builds a graph takes the Chainer functions.  Both are
run on the same random (He-initialised) weights and compared within 1e-5 of the
output's magnitude, at odd sizes (ceil-mode pooling on odd maps, partial row
bands) and, for the body net, at the full 368x656 of the speed figures.
"""
import chainer
import chainer.functions as F
import numpy as np
import pytest

from models import _blas, _fast, _native
from models import _mobilenet_fast as _mf
from models.CocoPoseNet import CocoPoseNet
from models.FaceNet import FaceNet
from models.HandNet import HandNet
from models.MobileNetV2PoseNet import depthwise_same
from support.cmu_nets import random_net

TOL = 1e-5


def _input(h, w, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(1, 3, h, w)).astype(np.float32) / 256 - 0.5)


def _outputs(model, x, fast):
    with chainer.using_config('train', False), \
            chainer.using_config('enable_backprop', not fast):
        out = model(x)
    maps = list(out[0]) + list(out[1]) if isinstance(out, tuple) else list(out)
    if not fast:  # the stock path built a graph
        assert all(m.creator is not None for m in maps)
    return [m.array for m in maps]


def _assert_close(ours, ref, what):
    assert ours.shape == ref.shape, what
    scale = np.abs(ref).max()
    assert scale > 1e-2 and ref.std() > 1e-3 * scale, (what, scale)
    err = np.abs(ours - ref).max()
    assert err <= TOL * scale, '%s: max|diff| %.3g > %.0e x %.3g' % (what, err, TOL, scale)


@pytest.mark.parametrize('cls', [CocoPoseNet, FaceNet, HandNet])
def test_fast_path_equals_stock_chainer_at_odd_size(cls):
    model = random_net(cls)
    x = _input(37, 53)
    ref = _outputs(model, x, fast=False)
    ours = _outputs(model, x, fast=True)
    assert len(ours) == len(ref) == (12 if cls is CocoPoseNet else 6)
    assert ref[-1].shape[2:] == (5, 7)  # ceil(37/8), ceil(53/8): ceil-mode pooling
    for i, (a, b) in enumerate(zip(ours, ref)):
        _assert_close(a, b, '%s output %d' % (cls.__name__, i))


def test_body_net_fast_path_equals_stock_at_368x656():
    """The feature extractor and the first two stages at full size (many row bands of
    every layer shape; the later stages repeat stage 2's layers at the same size)."""
    from models.CocoPoseNet import FRONT, run_convs
    model = random_net(CocoPoseNet, seed=3)
    x = _input(368, 656, seed=2)
    results = {}
    for fast in (True, False):
        with chainer.using_config('train', not fast), chainer.no_backprop_mode():
            f = run_convs(model, FRONT, x, fast=fast)
            outs = []
            h = f
            for l1, l2 in model.stages[:2]:
                h1 = run_convs(model, l1, h, relu_last=False, fast=fast)
                h2 = run_convs(model, l2, h, relu_last=False, fast=fast)
                outs += [h1, h2]
                h = np.concatenate([getattr(a, 'array', a) for a in (h1, h2, f)], axis=1)
        results[fast] = [getattr(o, 'array', o) for o in [f] + outs]
    assert results[True][0].shape == (1, 128, 46, 82)
    for i, (a, b) in enumerate(zip(results[True], results[False])):
        _assert_close(a, b, 'CocoPoseNet 368x656 map %d' % i)


@pytest.mark.parametrize('shape', [(2, 5, 8, 8), (1, 3, 9, 7), (1, 4, 1, 1), (1, 2, 6, 1), (2, 3, 1, 5)])
def test_max_pool_matches_chainer_cover_all(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = F.max_pooling_2d(x, ksize=2, stride=2).array  # cover_all=True: Caffe ceil mode
    assert np.array_equal(_fast.max_pool_2x2(x), ref)


@pytest.mark.parametrize('blas', [True, False], ids=['taps', 'no-blas'])
@pytest.mark.parametrize('c,o,k,h,w,band', [
    (3, 8, 3, 11, 9, 1 << 20),      # few channels: one GEMM over the full columns
    (20, 6, 3, 13, 10, 2000),       # taps / row split, bands of 1-2 rows, partial last band
    (17, 5, 7, 9, 12, 30000),       # 7x7 (Winograd along the width), kernel larger than bands
    (18, 6, 7, 11, 13, 20000),      # 7x7, odd width (a last tile of one pixel), 3 bands
    (16, 4, 7, 3, 4, 1 << 20),      # map smaller than the kernel
    (16, 4, 7, 1, 1, 1 << 20),      # 1x1 map, 7x7 kernel: every tap but one on the padding
    (9, 7, 1, 5, 6, 1 << 20),       # 1x1
    (256, 128, 3, 9, 7, 200000),    # 3x3, 128 out: taps, not Winograd
    (256, 256, 3, 9, 7, 400000),    # Winograd: odd sizes, bands of 1-2 tile rows
    (260, 256, 3, 1, 1, 1 << 20),   # Winograd on a 1x1 map
    (256, 256, 3, 8, 12, 1 << 24),  # Winograd, even sizes, one band
])
def test_conv2d_matches_chainer(monkeypatch, blas, c, o, k, h, w, band):
    monkeypatch.setattr(_fast, 'BAND_BYTES', band)
    monkeypatch.setattr(_fast, 'TAPS_BAND_BYTES', band)
    monkeypatch.setattr(_fast, 'WINOGRAD_BAND_BYTES', band)
    monkeypatch.setattr(_fast, 'WINOGRAD_1D_BAND_BYTES', band)
    if not blas:  # as with a NumPy built without OpenBLAS
        monkeypatch.setattr(_blas, '_LIB', [None])
    rng = np.random.default_rng(c + k)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    W = rng.standard_normal((o, c, k, k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    for relu in (False, True):
        ref = F.convolution_2d(x, W, b, pad=k // 2)
        ref = (F.relu(ref) if relu else ref).array
        got = _fast.conv2d(x, W, b, k // 2, relu)
        assert got.flags.c_contiguous
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), (c, k, relu)


def test_training_keeps_the_differentiable_path():
    """Backprop mode (training) builds the graph; gradients reach the first layer."""
    model = random_net(HandNet)
    x = _input(21, 19)
    model.cleargrads()  # Chainer initialises parameter gradients with NaN
    with chainer.using_config('train', True):
        maps = model(x)
    assert all(m.creator is not None for m in maps)
    F.mean(maps[-1]).backward()
    grad = model.conv1_1.W.grad
    assert grad is not None and np.isfinite(grad).all() and np.abs(grad).max() > 0
    # inference on a Variable input also takes the fast path and returns Variables
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        out = model(chainer.Variable(x))
    assert all(isinstance(m, chainer.Variable) and m.creator is None for m in out)


def test_gemm_on_strided_views_with_and_without_blas(monkeypatch):
    """``_blas.gemm`` on views with strided rows (as ``_conv_taps`` passes them): overwrite
    and accumulate equal NumPy's product; NumPy's own OpenBLAS is found on this platform."""
    import glob
    import os
    if glob.glob(os.path.join(os.path.dirname(np.__file__), '..', 'numpy.libs', '*openblas*')):
        assert _blas.sgemm() is not None  # else the taps path would silently never run
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    big = rng.standard_normal((7, 40)).astype(np.float32)
    b = big[:, 3:3 + 11]  # rows 40 floats apart
    for use_blas in (True, False):
        c = rng.standard_normal((5, 20)).astype(np.float32)
        c0 = c.copy()
        _blas.gemm(a, b, c[:, 2:13], beta=1.0, use_blas=use_blas)
        assert np.allclose(c[:, 2:13], c0[:, 2:13] + a @ b, atol=1e-5)
        assert np.array_equal(c[:, :2], c0[:, :2]) and np.array_equal(c[:, 13:], c0[:, 13:])
        _blas.gemm(a, b, c[:, 2:13], use_blas=use_blas)
        assert np.allclose(c[:, 2:13], a @ b, atol=1e-5)
    with pytest.raises(ValueError, match='shapes'):
        _blas.gemm(a, b, np.empty((5, 12), np.float32))
    with pytest.raises(ValueError, match='contiguous rows'):
        _blas.gemm(a, big[:, ::2], np.empty((5, 20), np.float32))


def _native_reset(monkeypatch, **env):
    """Forget the loaded C kernels for this test, with ``env`` set."""
    monkeypatch.setattr(_native, '_LOADED', {})
    monkeypatch.setattr(_native, '_REASONS', {})
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize('native', [True, False])
@pytest.mark.parametrize('c, h, w, k, stride', [
    (5, 46, 54, 3, 1),    # refinement-sized map (filter2D fallback: >= 512 pixels)
    (4, 37, 53, 3, 2),    # odd sizes, stride 2: SAME pads only after
    (3, 38, 52, 3, 2),    # even sizes, stride 2: SAME pads one after, none before
    (6, 7, 9, 3, 1),      # small map (fallback: shifted views)
    (6, 7, 9, 3, 2),
    (3, 1, 1, 3, 2),      # 1x1 map: every tap but one on the padding
    (4, 23, 29, 5, 1),    # other kernel sizes (generic loop of the C kernel)
    (4, 23, 29, 5, 2),
    (4, 11, 6, 1, 1),
])
def test_depthwise_matches_chainer(c, h, w, k, stride, native):
    """``_mobilenet_fast.depthwise`` (C kernel, or its NumPy/OpenCV fallback) equals
    Chainer's ``depthwise_convolution_2d`` with TensorFlow SAME padding, reading channel
    planes of a bigger buffer and writing into one."""
    if native:  # else the C path would silently never run here
        assert _native.load('_depthwise', _mf._DEPTHWISE_C) is not None, \
            _native.reason('_depthwise')
    rng = np.random.default_rng(c * h + k)
    buf = rng.standard_normal((c + 2, h, w)).astype(np.float32)
    x = buf[1:c + 1]  # planes of a bigger buffer, as the model passes them
    W = rng.standard_normal((c, k, k)).astype(np.float32)
    ref = depthwise_same(x[None], W[None], stride).array[0]
    out = np.full((c + 1,) + ref.shape[1:], np.nan, np.float32)
    got = _mf.depthwise(x, W, stride, out[1:], native=native)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.isnan(out[0]).all()  # nothing written outside the output planes


def test_depthwise_rejects_mismatched_shapes():
    x = np.zeros((4, 9, 9), np.float32)
    with pytest.raises(ValueError, match='depthwise shapes'):
        _mf.depthwise(x, np.zeros((4, 3, 3), np.float32), 2, np.zeros((4, 9, 9), np.float32))


def test_native_kernel_built_once_into_the_cache(monkeypatch, tmp_path):
    """First use compiles models/_depthwise.c into the cache directory, its size and
    checksum beside it (no temp files left); later processes find it there and compile
    nothing."""
    _native_reset(monkeypatch, POSE_NATIVE_CACHE=str(tmp_path))
    lib = _native.load('_depthwise', _mf._DEPTHWISE_C)
    assert lib is not None, _native.reason('_depthwise')
    built = sorted(p.name for p in tmp_path.iterdir())
    assert len(built) == 2 and built[0].startswith('_depthwise-') and built[0].endswith('.so')
    assert built[1] == built[0] + '.sha256'
    size, digest = (tmp_path / built[1]).read_text().split()
    import hashlib
    data = (tmp_path / built[0]).read_bytes()
    assert int(size) == len(data) and digest == hashlib.sha256(data).hexdigest()
    _native_reset(monkeypatch)

    def no_compiler(*args):
        raise AssertionError('compiled again')
    monkeypatch.setattr(_native, '_compile', no_compiler)
    assert _native.load('_depthwise', _mf._DEPTHWISE_C) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == built


def test_native_kernel_without_compiler_warns_and_falls_back(monkeypatch, tmp_path, capfd):
    """No working C compiler: one warning line naming the kernel and the reason, then the
    NumPy/OpenCV path with the same results; POSE_NATIVE=0 turns it off quietly."""
    _native_reset(monkeypatch, POSE_NATIVE_CACHE=str(tmp_path), CC=str(tmp_path / 'no-cc'))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 30, 31)).astype(np.float32)
    W = rng.standard_normal((3, 3, 3)).astype(np.float32)
    ref = depthwise_same(x[None], W[None], 2).array[0]
    capfd.readouterr()
    got = _mf.depthwise(x, W, 2, np.empty_like(ref))
    err = capfd.readouterr().err
    assert err.count('\n') == 1 and err.startswith('warning: C kernel _depthwise.c unavailable (')
    assert 'no-cc' in err
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    assert list(tmp_path.iterdir()) == []  # no half-built library left behind
    _native_reset(monkeypatch, POSE_NATIVE='0')
    assert _native.load('_depthwise', _mf._DEPTHWISE_C) is None
    assert capfd.readouterr().err == ''
    assert _native.reason('_depthwise') == 'disabled by POSE_NATIVE=0'


def test_depthwise_accepts_any_stride_on_length_one_axes():
    """NumPy gives length-1 axes arbitrary strides (views, reshapes): one-row and
    one-channel planes still go to the C kernel, read and written correctly."""
    rng = np.random.default_rng(5)
    for shape in ((3, 1, 9), (1, 5, 1), (1, 1, 1)):
        x = np.lib.stride_tricks.as_strided(
            rng.standard_normal(shape).astype(np.float32), shape,
            tuple(4 * 1000 if n == 1 else st for n, st in
                  zip(shape, np.empty(shape, np.float32).strides)))
        W = rng.standard_normal((shape[0], 3, 3)).astype(np.float32)
        ref = depthwise_same(np.ascontiguousarray(x)[None], W[None], 1).array[0]
        out = np.empty_like(ref)
        out = np.lib.stride_tricks.as_strided(out, out.shape, tuple(
            4 * 777 if n == 1 else st for n, st in zip(out.shape, out.strides)))
        assert _mf._planes(out) is not None
        got = _mf.depthwise(x, W, 1, out)
        assert np.abs(got - ref).max() <= 1e-5 * max(np.abs(ref).max(), 1e-30), shape


def test_native_kernel_rebuilds_a_corrupt_cached_library(monkeypatch, tmp_path):
    """A cached library that does not load (truncated by a full disk, say) is built again,
    readable by others (mode 755); ``$CC`` may carry arguments.  (Loads in fresh processes:
    this one already maps the library under that name.)"""
    import os
    import subprocess
    import sys
    from support.testing import REPO
    probe = ('import warnings; warnings.simplefilter("error"); '
             'from models import _native, _mobilenet_fast as m; '
             'print(_native.load("_depthwise", m._DEPTHWISE_C) is not None, '
             '_native.reason("_depthwise"))')

    def load_in_child(**env):
        r = subprocess.run([sys.executable, '-c', probe], cwd=REPO, capture_output=True,
                           text=True, env=dict(os.environ, POSE_NATIVE_CACHE=str(tmp_path), **env))
        return r.stdout.strip() or r.stderr.strip().splitlines()[-1]

    assert load_in_child() == 'True None'
    (built,) = tmp_path.glob('*.so')
    built.write_bytes(b'not a library')
    assert load_in_child() == 'True None'
    (rebuilt,) = tmp_path.glob('*.so')
    assert rebuilt.stat().st_size > 1000 and rebuilt.stat().st_mode & 0o777 == 0o755
    assert load_in_child(CC='cc -O2') == 'True None'  # another compiler command: its own build
    assert len(list(tmp_path.glob('*.so'))) == 2


def _load_in_child(cache, **env):
    """Load the depthwise kernel in a fresh process: (exit status, stdout, stderr)."""
    import os
    import subprocess
    import sys
    from support.testing import REPO
    probe = ('from models import _native, _mobilenet_fast as m; '
             'print(_native.load("_depthwise", m._DEPTHWISE_C) is not None)')
    r = subprocess.run([sys.executable, '-c', probe], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, POSE_NATIVE_CACHE=str(cache), **env), timeout=300)
    return r.returncode, r.stdout.strip(), r.stderr


def test_truncated_cached_library_is_rebuilt_not_loaded(tmp_path):
    """A cached library cut short (a full disk, a copy interrupted): loading it would kill
    the process with SIGBUS.  Its size and checksum no longer match what was written, so it
    is built again, saying so in one line; with no compiler left, the fallback is used."""
    assert _load_in_child(tmp_path) == (0, 'True', '')
    (lib,) = tmp_path.glob('*.so')
    good = lib.read_bytes()
    lib.write_bytes(good[:len(good) // 2])
    status, out, err = _load_in_child(tmp_path)
    assert (status, out) == (0, 'True'), err  # was -7 (SIGBUS) on a cut library
    assert err.count('\n') == 1 and err.startswith('warning: C kernel _depthwise.c: cached ')
    assert 'failed its check (%d bytes, %d were written): built again' % (
        len(good) // 2, len(good)) in err
    import hashlib
    rebuilt = lib.read_bytes()
    assert len(rebuilt) > 1000 and (tmp_path / (lib.name + '.sha256')).read_text().split() == [
        str(len(rebuilt)), hashlib.sha256(rebuilt).hexdigest()]
    good = rebuilt
    # cut again, and no compiler to be found (same $CC, so the same cache entry): fallback
    lib.write_bytes(good[:len(good) // 2])
    (tmp_path / 'empty-bin').mkdir()
    status, out, err = _load_in_child(tmp_path, PATH=str(tmp_path / 'empty-bin'))
    assert (status, out) == (0, 'False'), err
    assert err.count('\n') == 1 and err.startswith('warning: C kernel _depthwise.c unavailable (')
    assert 'failed its check' in err and 'building it again failed' in err
    assert list(tmp_path.glob('*.so')) == []  # the cut library is gone


def test_unparsable_cc_falls_back_with_one_line(tmp_path):
    """CC='"x' (an unbalanced quote) was a traceback from shlex; now one warning line and the
    NumPy/OpenCV path."""
    status, out, err = _load_in_child(tmp_path, CC='"x')
    assert (status, out) == (0, 'False'), err
    assert err.count('\n') == 1 and 'Traceback' not in err
    assert err.startswith('warning: C kernel _depthwise.c unavailable (cannot parse $CC')
