"""The GPU path: CuPy kernels + cuBLAS GEMMs for the CMU nets (training and inference) and
the embedded MobileNet (inference).

Why hand-written: CuPy 14 has no cuDNN, and Chainer's own GPU convolution (im2col, then
``tensordot``, then transposed copies, in float32 without tensor cores) made the body net
2-20x slower than PyTorch on the same GPU; the MobileNet's forward was hundreds of small
Chainer kernels.  Here:

* ``Convolution2D`` (a Chainer ``FunctionNode``, so training keeps Chainer's Trainer,
  optimisers and ChainerMN): a GEMM-ready im2col (``models/_gpu_kernels.cu``) and one
  strided-batched cuBLAS GEMM over the images, ``W (O, C*k*k) @ col (N, C*k*k, HW) -> y (N,
  O, HW)``, already NCHW; 1x1 convolutions without im2col; bias + ReLU fused into one pass.
  Backward: grad W by a batched GEMM summed over the images, grad x by ``W^T`` GEMM + a
  gather col2im (no atomics); the im2col is recomputed rather than kept.
* Precision (``--precision``, ``$POSE_GPU_PRECISION``, default ``entity.params
  ['gpu_precision']``): ``fp32`` (exact), ``tf32`` (cuBLAS's TF32 compute type), ``bf16`` /
  ``fp16`` (16-bit GEMM operands written by the im2col itself, float32 accumulation and
  float32 activations between layers; bf16 needs no loss scaling).
* The MobileNet (inference): fused per-image normalisation + ReLU6 (+ residual) in one
  kernel per layer, a depthwise kernel, stored-statistics batch norm + ReLU fused into one
  pass after each 1x1 GEMM, always float32; the whole forward replayed as a CUDA graph
  for a shape seen ``GRAPH_AFTER`` times (a video's frames), which removes the ~300
  launches' Python overhead.

Everything goes through a *backend*: ``GpuBackend`` (CuPy) or ``ReferenceBackend`` (NumPy),
whose methods mirror each kernel's index arithmetic and emulate cuBLAS's column-major
strided-batched GEMM from the very arguments passed to cuBLAS, so the CPU tests run the same
orchestration (layouts, GEMM arguments, chunking, backward) against Chainer's functions.
CuPy is imported only when a GPU array arrives.
"""
import collections
import functools
import os
import sys

import numpy

from entity import params

PRECISIONS = tuple(params['gpu_precisions'])
PRECISION_ENV = 'POSE_GPU_PRECISION'
ACT_NONE, ACT_RELU, ACT_RELU6 = 0, 1, 2
# Largest im2col buffer of one GEMM in bytes; a batch whose columns exceed it is done in
# chunks of images (conv1_2 at batch 8, 368x656, float32 would be 4.4 GB).
COL_BYTES = 1 << 30
# A MobileNet input shape is replayed as a CUDA graph from its GRAPH_AFTER-th forward on
# (the first ones run eagerly and warm the memory pool up); $POSE_GPU_GRAPHS=0 turns it off.
GRAPH_AFTER = 3
GRAPH_CACHE = 8
KERNEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_gpu_kernels.cu')

# cuBLAS / CUDA enums (cublas_api.h, library_types.h)
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32 = 68, 77
CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF = 0, 2, 14
CUBLAS_GEMM_DEFAULT = -1
CUBLAS_POINTER_MODE_HOST = 0
# precision -> (storage of the GEMM operands, cuBLAS compute type)
_MODES = {'fp32': ('f32', CUBLAS_COMPUTE_32F), 'tf32': ('f32', CUBLAS_COMPUTE_32F_FAST_TF32),
          'bf16': ('bf16', CUBLAS_COMPUTE_32F), 'fp16': ('f16', CUBLAS_COMPUTE_32F)}
_CUDA_TYPE = {'f32': CUDA_R_32F, 'bf16': CUDA_R_16BF, 'f16': CUDA_R_16F}


def precision():
    """The GEMM precision of GPU convolutions: ``$POSE_GPU_PRECISION`` (set by the scripts'
    ``--precision``) or ``entity.params['gpu_precision']``."""
    mode = os.environ.get(PRECISION_ENV) or params['gpu_precision']
    if mode not in PRECISIONS:
        from cli import UserError
        raise UserError('%s=%s: not a GPU precision (choose from %s)'
                        % (PRECISION_ENV, mode, ', '.join(PRECISIONS)))
    return mode


def is_gpu_array(a):
    """True for a CuPy array or a Variable holding one (without importing CuPy)."""
    a = getattr(a, 'array', a)
    return type(a).__module__.split('.')[0] == 'cupy'


def storage_dtype(store):
    return numpy.float32 if store == 'f32' else numpy.uint16


def cublas_arguments(trans_a, trans_b, m, n, k, lda, ldb, ldc):
    """cuBLAS (column-major) arguments for the row-major product ``C (m x n) = op(A) (m x k)
    @ op(B) (k x n)``, each matrix stored row-major with row length ``ld*``: column-major,
    that is ``C^T = op(B)^T op(A)^T``, so B goes first.  Returns ``(op_first, op_second, m',
    n', k', ld_first, ld_second, ldc)`` with first = B, second = A."""
    return ((CUBLAS_OP_T if trans_b else CUBLAS_OP_N), (CUBLAS_OP_T if trans_a else CUBLAS_OP_N),
            n, m, k, ldb, lda, ldc)


def same_pads(h, w, k, stride):
    """TensorFlow SAME padding of an (h, w) map: ``(top, left, oh, ow)`` (the bottom/right
    padding is implied by the output size)."""
    from models._mobilenet_table import same_padding
    return same_padding(h, k, stride)[0], same_padding(w, k, stride)[0], -(-h // stride), \
        -(-w // stride)


# ----------------------------------------------------------------------------- backends

class ReferenceBackend(object):
    """NumPy versions of the GPU kernels, with the kernels' own index arithmetic (flat
    thread index -> element), and of cuBLAS's strided-batched GEMM driven by the same
    arguments.  For the CPU tests; slow."""
    xp = numpy

    @staticmethod
    def f32_to_bf16(x):
        """Round to nearest even, as ``f32_to_bf16`` in the kernels."""
        u = numpy.ascontiguousarray(x, numpy.float32).view(numpy.uint32).astype(numpy.uint64)
        nan = (u & 0x7fffffff) > 0x7f800000
        r = ((u + 0x7fff + ((u >> 16) & 1)) >> 16) & 0xffff
        return numpy.where(nan, (u >> 16) | 0x40, r).astype(numpy.uint16)

    @staticmethod
    def bf16_to_f32(h):
        return (numpy.asarray(h, numpy.uint16).astype(numpy.uint32) << 16).view(numpy.float32)

    def put(self, v, store):
        v = numpy.asarray(v, numpy.float32)
        if store == 'f32':
            return v
        if store == 'bf16':
            return self.f32_to_bf16(v)
        return v.astype(numpy.float16).view(numpy.uint16)

    def get(self, t, store):
        if store == 'f32':
            return numpy.asarray(t, numpy.float32)
        if store == 'bf16':
            return self.bf16_to_f32(t)
        return numpy.asarray(t, numpy.uint16).view(numpy.float16).astype(numpy.float32)

    def empty(self, shape, dtype=numpy.float32):
        return numpy.empty(shape, dtype)

    def im2col(self, x, k, s, pt, pl, oh, ow, store):
        n, c, h, w = x.shape
        i = numpy.arange(n * c * k * k * oh * ow, dtype=numpy.int64)
        p = i % (oh * ow)
        r = i // (oh * ow)
        kx = r % k
        ky = (r // k) % k
        nc = r // (k * k)
        ox = p % ow
        oy = p // ow
        iy = oy * s + ky - pt
        ix = ox * s + kx - pl
        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        flat = numpy.ascontiguousarray(x).reshape(-1)
        v = numpy.where(ok, flat[numpy.where(ok, (nc * h + iy) * w + ix, 0)], 0)
        return self.put(v, store).reshape(n, c * k * k, oh * ow)

    def col2im(self, gcol, out, k, s, pt, pl, oh, ow, store):
        shape = out.shape
        n, c, h, w = shape
        i = numpy.arange(n * c * h * w, dtype=numpy.int64)
        ix = i % w
        iy = (i // w) % h
        nc = i // (h * w)
        base = nc * k * k * oh * ow
        g = self.get(gcol, store).reshape(-1)
        acc = numpy.zeros(i.shape, numpy.float32)
        for ky in range(k):
            ty = iy + pt - ky
            oky = (ty >= 0) & (ty % s == 0)
            oy = ty // s
            oky &= oy < oh
            for kx in range(k):
                tx = ix + pl - kx
                ok = oky & (tx >= 0) & (tx % s == 0)
                ox = tx // s
                ok &= ox < ow
                j = base + ((ky * k + kx) * oh + oy) * ow + ox
                acc += numpy.where(ok, g[numpy.where(ok, j, 0)], 0)
        out[...] = acc.reshape(shape)
        return out

    def cast(self, x, store):
        return self.put(x, store)

    def relu_grad(self, gy, y, store, want32=True, want16=True):
        v = numpy.where(y > 0, gy, 0).astype(numpy.float32)
        return (v if want32 else None), (self.put(v, store) if want16 else None)

    def affine_act(self, y, gamma, beta, mean, var, eps, act):
        o = y.shape[1]
        i = numpy.arange(y.size, dtype=numpy.int64)
        ch = (i // (y.size // (y.shape[0] * o))) % o
        v = y.reshape(-1).astype(numpy.float32)
        if mean is not None:
            s = (gamma / numpy.sqrt(var + numpy.float32(eps))).astype(numpy.float32)
            v = v * s[ch] + (beta - mean * s)[ch]
        elif beta is not None:
            v = v + beta[ch]
        y[...] = _activate(v, act).reshape(y.shape)
        return y

    def depthwise(self, x, w, s, pt, pl, oh, ow):
        n, c, h, wd = x.shape
        k = w.shape[-1]
        i = numpy.arange(n * c * oh * ow, dtype=numpy.int64)
        ox = i % ow
        oy = (i // ow) % oh
        nc = i // (oh * ow)
        ch = nc % c
        flat = numpy.ascontiguousarray(x).reshape(-1)
        wf = numpy.ascontiguousarray(w).reshape(-1)
        acc = numpy.zeros(i.shape, numpy.float32)
        for ky in range(k):
            iy = oy * s + ky - pt
            for kx in range(k):
                ix = ox * s + kx - pl
                ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
                v = flat[numpy.where(ok, nc * h * wd + iy * wd + ix, 0)]
                acc += numpy.where(ok, wf[ch * k * k + ky * k + kx] * v, 0)
        return acc.reshape(n, c, oh, ow)

    def instance_norm_act(self, x, out, gamma, beta, residual, eps, act):
        n, c = x.shape[:2]
        planes = x.reshape(n * c, -1)
        mean = planes.mean(axis=1, dtype=numpy.float32)
        d = planes - mean[:, None]
        var = (d * d).mean(axis=1, dtype=numpy.float32)
        ch = numpy.arange(n * c) % c
        scale = gamma[ch] / numpy.sqrt(var + numpy.float32(eps))
        v = _activate(d * scale[:, None] + beta[ch][:, None], act)
        if residual is not None:
            v = v + residual.reshape(n * c, -1)
        out[...] = v.reshape(out.shape)
        return out

    def gemm(self, a, b, c, trans_a, trans_b, m, n, k, lda, ldb, ldc, stride_a, stride_b,
             stride_c, batch, beta, compute, store_ab, store_c):
        """cuBLAS's column-major strided-batched GEMM, from the arguments
        ``GpuBackend.gemm`` passes to it (``cublas_arguments``)."""
        op1, op2, m_, n_, k_, ld1, ld2, ldc_ = cublas_arguments(trans_a, trans_b, m, n, k,
                                                                lda, ldb, ldc)
        first = self.get(b, store_ab).reshape(-1).astype(numpy.float64)
        second = self.get(a, store_ab).reshape(-1).astype(numpy.float64)
        if compute == CUBLAS_COMPUTE_32F_FAST_TF32:  # TF32 keeps 10 mantissa bits
            first, second = _round_mantissa(first, 10), _round_mantissa(second, 10)
        out = c.reshape(-1)

        def colmajor(buf, offset, rows, cols, ld):
            assert ld >= rows and offset + ld * (cols - 1) + rows <= buf.size, \
                ('matrix outside its buffer', offset, rows, cols, ld, buf.size)
            return numpy.lib.stride_tricks.as_strided(
                buf[offset:], (rows, cols), (buf.itemsize, ld * buf.itemsize))

        for i in range(batch):
            x = colmajor(first, i * stride_b, *((m_, k_) if op1 == CUBLAS_OP_N else (k_, m_)),
                         ld1)
            y = colmajor(second, i * stride_a, *((k_, n_) if op2 == CUBLAS_OP_N else (n_, k_)),
                         ld2)
            x = x if op1 == CUBLAS_OP_N else x.T
            y = y if op2 == CUBLAS_OP_N else y.T
            res = x @ y
            if beta:
                res = res + beta * self.get(colmajor(out, i * stride_c, m_, n_, ldc_).copy(),
                                            store_c)
            target = colmajor(out, i * stride_c, m_, n_, ldc_)
            target[...] = self.put(res, store_c)
        return c


def _round_mantissa(x, bits):
    """``x`` (float64) rounded to ``bits`` mantissa bits (as tensor cores see TF32)."""
    m, e = numpy.frexp(x)
    return numpy.ldexp(numpy.round(m * (1 << (bits + 1))) / (1 << (bits + 1)), e)


def _activate(v, act):
    if act == ACT_RELU:
        return numpy.maximum(v, 0)
    if act == ACT_RELU6:
        return numpy.clip(v, 0, 6)
    return v


class GpuBackend(object):
    """The CUDA kernels of ``_gpu_kernels.cu`` and cuBLAS, on CuPy arrays."""
    THREADS = 256

    def __init__(self):
        import cupy
        from cupy_backends.cuda.libs import cublas
        self.xp, self._cublas = cupy, cublas
        with open(KERNEL_FILE) as f:
            self._module = cupy.RawModule(code=f.read(), options=('-std=c++17',))
        self._kernels = {}
        self._one = numpy.ones(1, numpy.float32)  # host scalars of cuBLAS's alpha / beta
        self._zero = numpy.zeros(1, numpy.float32)

    def _kernel(self, name):
        if name not in self._kernels:
            self._kernels[name] = self._module.get_function(name)
        return self._kernels[name]

    def _launch(self, name, total, args, threads=None, blocks=None):
        threads = threads or self.THREADS
        if blocks is None:
            blocks = max(1, min(-(-total // threads), 1 << 20))
        self._kernel(name)((blocks,), (threads,), args)

    def empty(self, shape, dtype=numpy.float32):
        return self.xp.empty(shape, dtype)  # (every allocation: bench/gpu_check.py poisons)

    def im2col(self, x, k, s, pt, pl, oh, ow, store):
        n, c, h, w = x.shape
        col = self.empty((n, c * k * k, oh * ow), storage_dtype(store))
        i32 = numpy.int32
        self._launch('im2col_' + store, col.size,
                     (x, col, i32(c), i32(h), i32(w), i32(k), i32(s), i32(pt), i32(pl),
                      i32(oh), i32(ow), numpy.int64(col.size)))
        return col

    def col2im(self, gcol, gx, k, s, pt, pl, oh, ow, store):
        n, c, h, w = gx.shape
        i32 = numpy.int32
        self._launch('col2im_' + store, gx.size,
                     (gcol, gx, i32(c), i32(h), i32(w), i32(k), i32(s), i32(pt), i32(pl),
                      i32(oh), i32(ow), numpy.int64(gx.size)))
        return gx

    def cast(self, x, store):
        if store == 'f32':
            return x
        y = self.empty(x.shape, numpy.uint16)
        self._launch('cast_' + store, x.size, (x, y, numpy.int64(x.size)))
        return y

    def relu_grad(self, gy, y, store, want32=True, want16=True):
        g32 = self.empty(gy.shape, numpy.float32) if want32 else None
        g16 = self.empty(gy.shape, storage_dtype(store)) if want16 else None
        null = numpy.uint64(0)
        self._launch('relu_grad_' + store, gy.size,
                     (gy, y, null if g32 is None else g32, null if g16 is None else g16,
                      numpy.int64(gy.size)))
        return g32, g16

    def affine_act(self, y, gamma, beta, mean, var, eps, act):
        null = numpy.uint64(0)
        o = y.shape[1]
        hw = y.size // (y.shape[0] * o)
        self._launch('affine_act', y.size,
                     (y, null if gamma is None else gamma, null if beta is None else beta,
                      null if mean is None else mean, null if var is None else var,
                      numpy.float32(eps), numpy.int32(o), numpy.int64(hw), numpy.int32(act),
                      numpy.int64(y.size)))
        return y

    def depthwise(self, x, w, s, pt, pl, oh, ow):
        n, c, h, wd = x.shape
        k = w.shape[-1]
        y = self.empty((n, c, oh, ow), numpy.float32)
        i32 = numpy.int32
        self._launch('depthwise', y.size,
                     (x, w, y, i32(c), i32(h), i32(wd), i32(k), i32(s), i32(pt), i32(pl),
                      i32(oh), i32(ow), numpy.int64(y.size)))
        return y

    def instance_norm_act(self, x, out, gamma, beta, residual, eps, act):
        n, c = x.shape[:2]
        self._launch('instance_norm_act', 0,
                     (x, out, gamma, beta, numpy.uint64(0) if residual is None else residual,
                      numpy.int32(c), numpy.int64(x.size // (n * c)), numpy.float32(eps),
                      numpy.int32(act)), threads=256, blocks=n * c)
        return out

    def gemm(self, a, b, c, trans_a, trans_b, m, n, k, lda, ldb, ldc, stride_a, stride_b,
             stride_c, batch, beta, compute, store_ab, store_c):
        cublas = self._cublas
        handle = self.xp.cuda.device.get_cublas_handle()
        cublas.setStream(handle, self.xp.cuda.get_current_stream().ptr)
        cublas.setPointerMode(handle, CUBLAS_POINTER_MODE_HOST)
        op1, op2, m_, n_, k_, ld1, ld2, ldc_ = cublas_arguments(trans_a, trans_b, m, n, k,
                                                                lda, ldb, ldc)
        t_ab, t_c = _CUDA_TYPE[store_ab], _CUDA_TYPE[store_c]
        cublas.gemmStridedBatchedEx(
            handle, op1, op2, m_, n_, k_, self._one.ctypes.data,
            b.data.ptr, t_ab, ld1, stride_b, a.data.ptr, t_ab, ld2, stride_a,
            (self._one if beta else self._zero).ctypes.data,
            c.data.ptr, t_c, ldc_, stride_c, batch, compute, CUBLAS_GEMM_DEFAULT)
        return c


@functools.lru_cache(maxsize=None)
def _gpu_backend(device_id):
    return GpuBackend()


def backend_for(array):
    """The backend of ``array``: NumPy's for a NumPy array, else GpuBackend (one per device)."""
    if isinstance(array, numpy.ndarray):
        return ReferenceBackend()
    return _gpu_backend(array.device.id)


# ----------------------------------------------------------------------------- convolution

def _images_per_chunk(per_image_bytes, n):
    return max(1, min(n, COL_BYTES // max(1, per_image_bytes)))


def conv_forward(be, x, W, b, stride, pads, act, mode, Wq=None):
    """``act(conv(x, W) + b)``: x (N, C, H, W) float32, W (O, C, k, k); ``pads`` = (top, left,
    OH, OW).  Returns ``(y, Wq)``, ``Wq`` the GEMM operand made of W (for the backward)."""
    store, compute = _MODES[mode]
    n, c, h, w = x.shape
    o, _, k, _ = W.shape
    pt, pl, oh, ow = pads
    p = oh * ow
    y = be.empty((n, o, oh, ow), numpy.float32)
    if Wq is None:
        Wq = be.cast(W.reshape(o, -1), store) if store != 'f32' else W.reshape(o, -1)
    if k == 1 and stride == 1 and pt == 0 and pl == 0:
        xin = be.cast(x, store) if store != 'f32' else x
        be.gemm(Wq, xin, y, False, False, o, p, c, c, p, p, 0, c * p, o * p, n, 0, compute,
                store, 'f32')
    else:
        kk = c * k * k
        step = _images_per_chunk(kk * p * numpy.dtype(storage_dtype(store)).itemsize, n)
        for n0 in range(0, n, step):
            n1 = min(n, n0 + step)
            col = be.im2col(x[n0:n1], k, stride, pt, pl, oh, ow, store)
            be.gemm(Wq, col, y[n0:n1], False, False, o, p, kk, kk, p, p, 0, kk * p, o * p,
                    n1 - n0, 0, compute, store, 'f32')
            del col
    if b is not None or act != ACT_NONE:
        be.affine_act(y, None, b, None, None, 0.0, act)
    return y, Wq


def conv_backward(be, x, W, Wq, y, gy, stride, pads, act, mode, need=(True, True, True)):
    """Gradients ``(gx, gW, gb)`` of ``conv_forward`` (None where ``need`` says so); ``y``
    is the forward's output (used by the ReLU's gradient)."""
    store, compute = _MODES[mode]
    n, c, h, w = x.shape
    o, _, k, _ = W.shape
    pt, pl, oh, ow = pads
    p = oh * ow
    need_x, need_W, need_b = need
    xp = be.xp
    gy = xp.ascontiguousarray(gy)
    if act == ACT_RELU:
        g32, g16 = be.relu_grad(gy, y, store, want32=store == 'f32' or need_b,
                                want16=store != 'f32')
    elif act == ACT_NONE:
        g32, g16 = gy, (be.cast(gy, store) if store != 'f32' else None)
    else:
        raise ValueError('backward of activation %d is not implemented' % act)
    g = g32 if store == 'f32' else g16
    gb = g32.sum(axis=(0, 2, 3)) if need_b else None
    gx = be.empty(x.shape, numpy.float32) if need_x else None
    gW = None
    one_by_one = k == 1 and stride == 1 and pt == 0 and pl == 0
    kk = c * k * k
    itemsize = numpy.dtype(storage_dtype(store)).itemsize
    step = _images_per_chunk(kk * p * itemsize, n)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        nb = n1 - n0
        gc = g[n0:n1]
        if need_W:
            if one_by_one:
                col = be.cast(x[n0:n1], store) if store != 'f32' else x[n0:n1]
            else:
                col = be.im2col(x[n0:n1], k, stride, pt, pl, oh, ow, store)
            # per image g (O, P) @ col^T (P, K), then summed over the images
            part = be.empty((nb, o, kk), numpy.float32)
            be.gemm(gc, col, part, False, True, o, kk, p, p, p, kk, o * p, kk * p, o * kk, nb,
                    0, compute, store, 'f32')
            part = part.sum(axis=0)
            gW = part if gW is None else gW + part
            del col
        if need_x:
            if one_by_one:
                be.gemm(Wq, gc, gx[n0:n1], True, False, c, p, o, c, p, p, 0, o * p, c * p, nb,
                        0, compute, store, 'f32')
            else:
                gcol = be.empty((nb, kk, p), storage_dtype(store))
                be.gemm(Wq, gc, gcol, True, False, kk, p, o, kk, p, p, 0, o * p, kk * p, nb, 0,
                        compute, store, store)
                be.col2im(gcol, gx[n0:n1], k, stride, pt, pl, oh, ow, store)
                del gcol
    if gW is not None:
        gW = gW.reshape(W.shape).astype(W.dtype, copy=False)
    return gx, gW, gb


def _function_node():
    import chainer

    class Convolution2D(chainer.function_node.FunctionNode):
        """``act(F.convolution_2d(x, W, b, stride, pad))`` on the kernels above."""

        def __init__(self, stride, pads, act, mode):
            self.stride, self.pads, self.act, self.mode = stride, pads, act, mode

        def forward(self, inputs):
            x, W = inputs[:2]
            b = inputs[2] if len(inputs) == 3 else None
            be = backend_for(x)
            x = be.xp.ascontiguousarray(x)
            W = be.xp.ascontiguousarray(W)
            self.retain_inputs((0, 1))
            y, self._Wq = conv_forward(be, x, W, b, self.stride, self.pads, self.act,
                                       self.mode)
            if self.act != ACT_NONE:
                self.retain_outputs((0,))
            return y,

        def backward(self, indexes, grad_outputs):
            x, W = (v.array for v in self.get_retained_inputs())
            be = backend_for(x)
            x = be.xp.ascontiguousarray(x)
            y = self.get_retained_outputs()[0].array if self.act != ACT_NONE else None
            need = tuple(i in indexes for i in range(3))
            grads = conv_backward(be, x, W, self._Wq, y, grad_outputs[0].array, self.stride,
                                  self.pads, self.act, self.mode, need)
            return tuple(chainer.Variable(grads[i]) for i in indexes)

    return Convolution2D


@functools.lru_cache(maxsize=None)
def _convolution_class():
    return _function_node()


def convolution_2d(x, W, b=None, pad=0, stride=1, act=ACT_NONE, mode=None):
    """``act(F.convolution_2d(x, W, b, stride, pad))`` (square kernel, symmetric ``pad``) on
    the GPU kernels: differentiable (a Chainer FunctionNode).  ``mode``: a precision, default
    ``precision()``."""
    mode = mode or precision()
    h, w = x.shape[2:]
    k = W.shape[2]
    pads = (pad, pad, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1)
    inputs = (x, W) if b is None else (x, W, b)
    return _convolution_class()(stride, pads, act, mode).apply(inputs)[0]


# ----------------------------------------------------------------------------- MobileNet

def _arr(v):
    return getattr(v, 'array', v)


def _norm(be, model, name, y, act, residual=None):
    norm = model[name]
    return be.instance_norm_act(y, y, _arr(norm.gamma), _arr(norm.beta), residual, norm.eps,
                                act)


def _conv_same(be, model, name, x, stride):
    W = _arr(model[name].W)
    k = W.shape[2]
    if model[name].__class__.__name__ == 'DepthwiseConvolution2D':
        pt, pl, oh, ow = same_pads(x.shape[2], x.shape[3], k, stride)
        return be.depthwise(x, W[0], stride, pt, pl, oh, ow)
    y, _ = conv_forward(be, x, W, None, stride, same_pads(x.shape[2], x.shape[3], k, stride),
                        ACT_NONE, 'fp32')
    return y


_resize_cache = {}


def _resize_matrices(xp, out_h, in_h, out_w, in_w):
    """The two interpolation matrices of the features' resize, on ``xp``'s current device,
    made once: a host-to-device copy inside a CUDA-graph capture would break it."""
    from models._mobilenet_table import interpolation_matrix_tf_legacy
    key = (xp.__name__, xp.cuda.Device().id if xp is not numpy else -1, out_h, in_h, out_w, in_w)
    if key not in _resize_cache:
        _resize_cache[key] = (xp.asarray(interpolation_matrix_tf_legacy(out_h, in_h)),
                              xp.asarray(interpolation_matrix_tf_legacy(out_w, in_w)))
    return _resize_cache[key]


def mobilenet_forward(model, x, be=None):
    """``MobileNetV2PoseNet`` inference on arrays: ``(pafs, heatmaps)``, lists of the six
    stages' arrays, float32 throughout (its GEMMs are small: reduced precision would not pay,
    and the per-image normalisations amplify rounding)."""
    from models import _mobilenet_table as M
    be = be or backend_for(x)
    xp = be.xp
    x = xp.ascontiguousarray(x)
    h = _norm(be, model, 'Conv_bn', _conv_same(be, model, 'Conv', x, 2), ACT_RELU6)
    fine = None
    for name, has_expand, stride, residual in model._blocks:
        y = h
        if has_expand:
            y = _norm(be, model, name + '_expand_bn', _conv_same(be, model, name + '_expand', y,
                                                                 1), ACT_RELU6)
        y = _norm(be, model, name + '_depthwise_bn',
                  _conv_same(be, model, name + '_depthwise', y, stride), ACT_RELU6)
        y = _norm(be, model, name + '_project_bn', _conv_same(be, model, name + '_project', y,
                                                              1), ACT_NONE,
                  h if residual else None)
        h = y
        if name == M.FINE_BLOCK:
            fine = h
    n, c, fh, fw = fine.shape
    mh, mw = _resize_matrices(xp, fh, h.shape[2], fw, h.shape[3])
    cc = h.shape[1]
    rows = xp.matmul(h.reshape(n * cc * h.shape[2], h.shape[3]), mw.T)
    coarse = xp.matmul(mh, rows.reshape(n * cc, h.shape[2], fw))
    feature = xp.concatenate((fine, coarse.reshape(n, cc, fh, fw)), axis=1)
    pafs, heatmaps = [], []
    hin = feature
    for stage in range(1, M.N_STAGES + 1):
        outs = [_mobilenet_branch(be, model, stage, br, hin) for br in ('L1', 'L2')]
        pafs.append(outs[0])
        heatmaps.append(outs[1])
        if stage < M.N_STAGES:
            hin = xp.concatenate((outs[0], outs[1], feature), axis=1)
    return pafs, heatmaps


def _mobilenet_branch(be, model, stage, branch, h):
    from models import _mobilenet_table as M
    last = len(M.STAGE_KSIZES)
    for i in range(1, last + 1):
        name = 'MConv_Stage%d_%s_%d' % (stage, branch, i)
        dw, pw, bn = model[name + '_depthwise'], model[name + '_pointwise'], \
            model[name + '_pointwise_bn']
        k = dw.W.shape[2]
        pt, pl, oh, ow = same_pads(h.shape[2], h.shape[3], k, 1)
        d = be.depthwise(h, _arr(dw.W)[0], 1, pt, pl, oh, ow)
        y, _ = conv_forward(be, d, _arr(pw.W), None, 1, (0, 0, oh, ow), ACT_NONE, 'fp32')
        h = be.affine_act(y, _arr(bn.gamma), _arr(bn.beta), bn.avg_mean, bn.avg_var, bn.eps,
                          ACT_RELU if i < last else ACT_NONE)
    return h


class _GraphCache(object):
    """CUDA graphs of a forward function per input shape (see GRAPH_AFTER).  Each graph
    allocates from its own memory pool, which nothing else uses, so its buffers stay its
    own between replays; the outputs come back as a copy."""

    def __init__(self):
        self.graphs = collections.OrderedDict()
        self.seen = collections.Counter()
        self.failed = set()

    def __call__(self, key, fn, x, pin):
        """``fn(x)`` -> list of arrays; ``pin``: the arrays the graph reads besides ``x`` (a
        graph replays raw pointers: kept alive with it, and part of its key)."""
        import cupy
        if os.environ.get('POSE_GPU_GRAPHS', '1') == '0':
            return fn(x)
        key = (key, x.shape, x.dtype.str, tuple(id(a) for a in pin))
        entry = self.graphs.get(key)
        if entry is None:
            self.seen[key] += 1
            if key in self.failed or self.seen[key] < GRAPH_AFTER:
                return fn(x)
            try:
                entry = self._capture(cupy, fn, x, pin)
            except Exception as e:  # CUDA or CuPy refused the capture: stay eager
                self.failed.add(key)
                print('note: CUDA graph capture failed, running eagerly (%s: %s)'
                      % (type(e).__name__, str(e).splitlines()[0] if str(e) else ''),
                      file=sys.stderr)
                return fn(x)
            self.graphs[key] = entry
            while len(self.graphs) > GRAPH_CACHE:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        static_in, flat, shapes, graph, _, _ = entry
        static_in[...] = x
        graph.launch()
        out, offset = flat.copy(), 0
        arrays = []
        for shape in shapes:
            size = int(numpy.prod(shape))
            arrays.append(out[offset:offset + size].reshape(shape))
            offset += size
        return arrays

    @staticmethod
    def _capture(cupy, fn, x, pin):
        pool = cupy.cuda.MemoryPool()
        stream = cupy.cuda.Stream(non_blocking=True)
        with cupy.cuda.using_allocator(pool.malloc):
            static_in = cupy.empty_like(x)
            static_in[...] = x
            cupy.cuda.get_current_stream().synchronize()
            with stream:
                outs = fn(static_in)  # warm-up: the pool caches this stream's blocks
                shapes = [o.shape for o in outs]
                del outs
                stream.synchronize()
                stream.begin_capture()
                try:
                    flat = cupy.concatenate([o.reshape(-1) for o in fn(static_in)])
                finally:
                    graph = stream.end_capture()
            stream.synchronize()
        return static_in, flat, shapes, graph, pool, list(pin)


_graphs = _GraphCache()


def mobilenet_inference(model, x):
    """``MobileNetV2PoseNet.forward`` for a CuPy batch without a graph: Variables as the
    Chainer path returns them (replayed as a CUDA graph for a repeated shape)."""
    import chainer
    from models import _mobilenet_table as M
    pin = [_arr(p) for p in model.params()] + [
        a for link in model.links() for a in (getattr(link, 'avg_mean', None),
                                              getattr(link, 'avg_var', None)) if a is not None]

    def fn(inp):
        pafs, heatmaps = mobilenet_forward(model, inp)
        return pafs + heatmaps

    outs = _graphs(('mobilenet', id(model)), fn, x, pin)
    wrap = lambda a: chainer.Variable(a, requires_grad=False)  # noqa: E731
    return ([wrap(a) for a in outs[:M.N_STAGES]], [wrap(a) for a in outs[M.N_STAGES:]])
