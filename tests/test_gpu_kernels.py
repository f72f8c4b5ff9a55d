"""models/_gpu.py on the CPU: the GPU path's orchestration (im2col/col2im layouts, the
cuBLAS arguments of every GEMM, chunking, the backward, SAME padding, the fused norms) run
through ``ReferenceBackend``, whose methods mirror the CUDA kernels' index arithmetic and
emulate cuBLAS's column-major strided-batched GEMM from the arguments passed to it, against
Chainer's own CPU functions.  The CUDA source itself is compiled with NVRTC where it is
installed (the kernels run only on a GPU: bench/gpu_session.sh checks them there)."""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import importlib.util
import os
import zlib

import chainer
import chainer.functions as F
import numpy as np
import pytest

from models import _gpu

REF = _gpu.ReferenceBackend()


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def chainer_conv(x, W, b, pad, stride, relu):
    y = F.convolution_2d(x, W, b, stride=stride, pad=pad)
    return F.relu(y) if relu else y


# (N, C, H, W, O, k, pad, stride, bias, relu): 3x3 and 7x7 with odd sizes, 1x1 (the GEMM
# without im2col), a stride-2 layer, no bias, no ReLU
CASES = [(2, 3, 9, 11, 5, 3, 1, 1, True, True),
         (3, 4, 10, 7, 6, 7, 3, 1, True, True),
         (2, 5, 6, 9, 4, 1, 0, 1, True, False),
         (2, 3, 9, 8, 4, 3, 1, 2, False, True),
         (1, 2, 5, 5, 3, 3, 0, 1, True, False)]


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('mode', ['fp32', 'tf32', 'bf16', 'fp16'])
def test_convolution_forward_and_backward_match_chainer(case, mode):
    n, c, h, w, o, k, pad, stride, bias, relu = case
    rng = np.random.default_rng(zlib.crc32(repr((case, mode)).encode()))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    W = (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    xv, Wv = chainer.Variable(x.copy()), chainer.Variable(W.copy())
    bv = chainer.Variable(b.copy()) if bias else None
    y = _gpu.convolution_2d(xv, Wv, bv, pad=pad, stride=stride,
                            act=_gpu.ACT_RELU if relu else _gpu.ACT_NONE, mode=mode)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.grad = gy.copy()
    y.backward()
    ours = [y.array, xv.grad, Wv.grad] + ([bv.grad] if bias else [])
    # Chainer, with the ReLU's mask taken from our output: reduced precision moves outputs
    # near 0 across it, and one flipped gradient would dominate these small tensors
    xv, Wv = chainer.Variable(x.copy()), chainer.Variable(W.copy())
    bv = chainer.Variable(b.copy()) if bias else None
    yr = chainer_conv(xv, Wv, bv, pad, stride, False)
    yr.grad = gy * (ours[0] > 0) if relu else gy.copy()
    yr.backward()
    ref = [F.relu(yr).array if relu else yr.array, xv.grad, Wv.grad] + (
        [bv.grad] if bias else [])
    grads = [ref, ours]
    tol = {'fp32': 1e-6, 'tf32': 2e-3, 'bf16': 1.5e-2, 'fp16': 2e-3}[mode]
    for name, ours, ref in zip(('y', 'gx', 'gW', 'gb'), grads[1], grads[0]):
        assert ours.shape == ref.shape and ours.dtype == np.float32, name
        assert rel_err(ours, ref) < tol, (name, mode, rel_err(ours, ref))


def test_chunked_batch_equals_one_chunk(monkeypatch):
    """Images split over several im2col buffers (COL_BYTES) give the same result."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 7, 6)).astype(np.float32)
    W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((5, 4, 7, 6)).astype(np.float32)
    pads = (1, 1, 7, 6)
    y1, Wq = _gpu.conv_forward(REF, x, W, None, 1, pads, _gpu.ACT_RELU, 'fp32')
    g1 = _gpu.conv_backward(REF, x, W, Wq, y1, gy, 1, pads, _gpu.ACT_RELU, 'fp32')
    monkeypatch.setattr(_gpu, 'COL_BYTES', 27 * 42 * 4 * 2)  # two images per chunk
    y2, _ = _gpu.conv_forward(REF, x, W, None, 1, pads, _gpu.ACT_RELU, 'fp32')
    g2 = _gpu.conv_backward(REF, x, W, Wq, y2, gy, 1, pads, _gpu.ACT_RELU, 'fp32')
    np.testing.assert_allclose(y2, y1, rtol=1e-6, atol=1e-6)
    for a, b in zip(g2, g1):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('size', [(7, 9), (8, 10), (5, 5), (1, 3)])
@pytest.mark.parametrize('k, stride', [(3, 1), (3, 2), (1, 1), (1, 2)])
def test_same_padding_kernels_match_tensorflow_padding(size, k, stride):
    """im2col and the depthwise kernel with SAME's (top, left) padding (stride 2 pads
    asymmetrically) equal Chainer on the explicitly padded input, as the model does it."""
    from models.MobileNetV2PoseNet import conv_same, depthwise_same
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3) + size).astype(np.float32)
    pads = _gpu.same_pads(size[0], size[1], k, stride)
    W = rng.standard_normal((4, 3, k, k)).astype(np.float32)
    ref = conv_same(x, W, stride).array
    y, _ = _gpu.conv_forward(REF, x, W, None, stride, pads, _gpu.ACT_NONE, 'fp32')
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    Wd = rng.standard_normal((1, 3, k, k)).astype(np.float32)
    ref = depthwise_same(x, Wd, stride).array
    d = REF.depthwise(x, Wd[0], stride, *pads)
    np.testing.assert_allclose(d, ref, rtol=1e-5, atol=1e-5)


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), g> = <x, col2im(g)> for strides 1 and 2 and asymmetric padding."""
    rng = np.random.default_rng(3)
    for k, s, pt, pl, h, w in [(3, 1, 1, 1, 6, 7), (3, 2, 0, 0, 7, 8), (7, 1, 3, 3, 9, 8),
                               (3, 2, 1, 0, 5, 6)]:
        oh, ow = (h + 2 * pt - k) // s + 1, (w + 2 * pl - k) // s + 1
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        col = REF.im2col(x, k, s, pt, pl, oh, ow, 'f32')
        g = rng.standard_normal(col.shape).astype(np.float32)
        gx = REF.col2im(g, np.empty_like(x), k, s, pt, pl, oh, ow, 'f32')
        assert abs(np.vdot(col, g) - np.vdot(x, gx)) < 1e-3 * abs(np.vdot(col, g)) + 1e-3


def test_bf16_rounding_is_round_to_nearest_even():
    vals = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9, -2.5, 3.1415927, 1e-40,
                     np.inf, -np.inf, 65504.0, 1e38], np.float32)
    bits = REF.f32_to_bf16(vals)
    back = REF.bf16_to_f32(bits)
    # nearest representable with 7 mantissa bits, ties to even
    expect = np.array([1.0, 1.0, 1 + 4 * 2 ** -8, 1.0, -2.5, 3.140625, back[6], np.inf, -np.inf,
                       65536.0, back[10]], np.float32)
    np.testing.assert_array_equal(back, expect)
    assert np.isnan(REF.bf16_to_f32(REF.f32_to_bf16(np.array([np.nan], np.float32))))[0]
    assert abs(back[10] / 1e38 - 1) < 2 ** -8
    if importlib.util.find_spec('ml_dtypes'):
        import ml_dtypes
        r = np.random.default_rng(4).standard_normal(10000).astype(np.float32) * 100
        np.testing.assert_array_equal(REF.f32_to_bf16(r), r.astype(ml_dtypes.bfloat16)
                                      .view(np.uint16))


def test_gemm_arguments_cover_transposes_strides_and_leading_dimensions():
    """The cuBLAS emulation, fed by ``cublas_arguments``, equals NumPy's matmul for every
    transpose combination, a broadcast operand (stride 0) and padded leading dimensions."""
    rng = np.random.default_rng(5)
    m, n, k, batch = 3, 5, 4, 2
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((batch, k, m) if ta else (batch, m, k)).astype(np.float32)
            b = rng.standard_normal((batch, n, k) if tb else (batch, k, n)).astype(np.float32)
            c = np.full((batch, m, n), np.nan, np.float32)
            lda, ldb = a.shape[2], b.shape[2]
            REF.gemm(a, b, c, ta, tb, m, n, k, lda, ldb, n, a[0].size, b[0].size, m * n,
                     batch, 0, _gpu.CUBLAS_COMPUTE_32F, 'f32', 'f32')
            ref = np.matmul(a.transpose(0, 2, 1) if ta else a, b.transpose(0, 2, 1) if tb else b)
            np.testing.assert_allclose(c, ref, rtol=1e-5)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((batch, k, n)).astype(np.float32)
    c = np.ones((batch, m, n), np.float32)
    REF.gemm(a, b, c, False, False, m, n, k, k, n, n, 0, k * n, m * n, batch, 1,
             _gpu.CUBLAS_COMPUTE_32F, 'f32', 'f32')  # beta = 1 accumulates
    np.testing.assert_allclose(c, a @ b + 1, rtol=1e-5)


def test_instance_norm_and_batch_norm_kernels_match_the_model_layers():
    from models.MobileNetV2PoseNet import InstanceNormalization
    import chainer.links as L
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((2, 5, 6, 7)) * 3 + 2).astype(np.float32)
    res = rng.standard_normal(x.shape).astype(np.float32)
    norm = InstanceNormalization(5)
    norm.gamma.array[...] = rng.standard_normal(5)
    norm.beta.array[...] = rng.standard_normal(5)
    ref = norm(x).array
    for act, f in ((_gpu.ACT_NONE, lambda v: v), (_gpu.ACT_RELU6, lambda v: np.clip(v, 0, 6))):
        out = REF.instance_norm_act(x, np.empty_like(x), norm.gamma.array, norm.beta.array,
                                    res, norm.eps, act)
        np.testing.assert_allclose(out, f(ref) + res, rtol=1e-4, atol=1e-4)
    bn = L.BatchNormalization(5, eps=1e-3)
    bn.avg_mean[...] = rng.standard_normal(5)
    bn.avg_var[...] = rng.random(5) + 0.1
    bn.gamma.array[...] = rng.standard_normal(5)
    bn.beta.array[...] = rng.standard_normal(5)
    with chainer.using_config('train', False):
        ref = F.relu(bn(x)).array
    out = REF.affine_act(x.copy(), bn.gamma.array, bn.beta.array, bn.avg_mean, bn.avg_var,
                         bn.eps, _gpu.ACT_RELU)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def mobilenet():
    from models import load_model
    from support.testing import REPO
    return load_model('mobilenet', os.path.join(REPO, 'models', 'mobilenet_v2_small.npz'))


def test_mobilenet_gpu_forward_equals_chainer_functions(mobilenet):
    """The GPU inference path (kernels emulated) on the shipped model, at an odd size (SAME
    padding and the resize on uneven maps), against the Chainer functions in float64."""
    rng = np.random.default_rng(7)
    x = (rng.random((2, 3, 72, 88)) * 255).astype(np.float32)
    pafs, heatmaps = _gpu.mobilenet_forward(mobilenet, x, REF)
    ref64 = mobilenet.copy(mode='copy')
    ref64.to_device('@numpy')
    for p in ref64.params():
        p.array = p.array.astype(np.float64)
    for link in ref64.links():
        for name in ('avg_mean', 'avg_var'):
            if hasattr(link, name):
                setattr(link, name, getattr(link, name).astype(np.float64))
    with chainer.using_config('train', False), chainer.no_backprop_mode(), \
            chainer.using_config('dtype', np.float64):
        rp, rh = ref64.forward_functions(x.astype(np.float64))
    for ours, ref in zip(pafs + heatmaps, rp + rh):
        assert ours.shape == ref.shape
        assert rel_err(ours, ref.array) < 1e-4, rel_err(ours, ref.array)


def test_posenet_stage_layers_through_the_gpu_path_train_like_chainer():
    """One CocoPoseNet-shaped block (3x3 front, pooling, 7x7 stage, 1x1 head) with the GPU
    convolutions: same loss and gradients as Chainer's functions."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 16, 20)).astype(np.float32)
    Ws = [(rng.standard_normal(s) * 0.2).astype(np.float32)
          for s in [(8, 3, 3, 3), (6, 8, 7, 7), (5, 6, 1, 1)]]
    bs = [rng.standard_normal(s[0]).astype(np.float32) * 0.1 for s in [w.shape for w in Ws]]
    results = []
    for gpu in (False, True):
        params = [chainer.Variable(a.copy()) for a in Ws + bs]
        h = chainer.Variable(x)
        for i, (pad, relu) in enumerate([(1, True), (3, True), (0, False)]):
            W, b = params[i], params[3 + i]
            if gpu:
                h = _gpu.convolution_2d(h, W, b, pad, act=_gpu.ACT_RELU if relu else 0,
                                        mode='fp32')
            else:
                h = chainer_conv(h, W, b, pad, 1, relu)
            if i == 0:
                h = F.max_pooling_2d(h, 2, 2)
        loss = F.sum(F.square(h))
        loss.backward()
        results.append([loss.array] + [p.grad for p in params])
    for ours, ref in zip(results[1], results[0]):
        assert rel_err(ours, ref) < 1e-5


class _CtypesNvrtc(object):
    """NVRTC's C API through ctypes, for machines with the NVRTC library (the
    ``nvidia-cuda-nvrtc`` wheel, which CI installs) but no CuPy."""

    def __init__(self, path):
        import ctypes
        self.ct = ctypes
        self.lib = ctypes.CDLL(path)

    def _check(self, status, prog=None):
        if status != 0:
            raise RuntimeError('NVRTC error %d' % status)

    def compile(self, src, name, options):
        ct, lib = self.ct, self.lib
        prog = ct.c_void_p()
        self._check(lib.nvrtcCreateProgram(ct.byref(prog), src.encode(), name.encode(), 0,
                                           None, None))
        opts = (ct.c_char_p * len(options))(*[o.encode() for o in options])
        status = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ct.c_size_t()
        if status != 0:
            self._check(lib.nvrtcGetProgramLogSize(prog, ct.byref(size)))
            log = ct.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            return None, log.value.decode('utf-8', 'replace')
        self._check(lib.nvrtcGetPTXSize(prog, ct.byref(size)))
        ptx = ct.create_string_buffer(size.value)
        self._check(lib.nvrtcGetPTX(prog, ptx))
        lib.nvrtcDestroyProgram(ct.byref(prog))
        return ptx.value.decode(), ''


class _CupyNvrtc(object):
    def __init__(self, nvrtc):
        self.nvrtc = nvrtc

    def compile(self, src, name, options):
        prog = self.nvrtc.createProgram(src, name, [], [])
        try:
            self.nvrtc.compileProgram(prog, options)
        except Exception:
            return None, self.nvrtc.getProgramLog(prog)
        ptx = self.nvrtc.getPTX(prog)
        return (ptx.decode() if isinstance(ptx, bytes) else ptx), ''


def _nvrtc():
    """CuPy's NVRTC binding, else the NVRTC library of an ``nvidia-cuda-nvrtc`` wheel on
    sys.path (``nvidia/cu13/lib``) or at ``$POSE_NVRTC_LIB``, else skip."""
    import glob
    import sys
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
        return _CupyNvrtc(nvrtc)
    except Exception as e:  # no CuPy, or no NVRTC library
        why = '%s: %s' % (type(e).__name__, e)
    paths = [os.environ.get('POSE_NVRTC_LIB', '')] + sorted(
        p for d in sys.path for p in glob.glob(os.path.join(d, 'nvidia', 'cu1*', 'lib',
                                                           'libnvrtc.so.*'))
        if 'builtins' not in p)
    for path in paths:
        if path and os.path.exists(path):
            return _CtypesNvrtc(path)
    pytest.skip('NVRTC not available here (%s; no nvidia-cuda-nvrtc wheel on sys.path): '
                'CI compiles the kernels in a step of its own (.ci/run)' % why)


def test_kernels_compile_with_nvrtc_for_hopper():
    nvrtc = _nvrtc()
    with open(_gpu.KERNEL_FILE) as f:
        src = f.read()
    ptx, log = nvrtc.compile(src, '_gpu_kernels.cu', ['-arch=compute_90', '-std=c++17'])
    assert ptx is not None, 'NVRTC: %s' % log
    for name in ('im2col_f32', 'im2col_bf16', 'im2col_f16', 'col2im_f32', 'col2im_bf16',
                 'cast_bf16', 'relu_grad_f32', 'relu_grad_bf16', 'affine_act', 'depthwise',
                 'instance_norm_act'):
        assert '.entry %s(' % name in ptx, name
    assert '.local' not in ptx  # no spilled arrays
