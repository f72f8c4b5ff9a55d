"""Correctness of the GPU kernels (models/_gpu.py) on the device, against float64 references
computed by Chainer's CPU functions: fresh random inputs for every check, every output buffer
poisoned (NaN) before the kernels write it, errors as ||out - ref|| / ||ref||.

Checks: convolutions forward and backward (3x3, the wide 7x7 stage layer, 1x1, stride-2 SAME)
in every precision; the depthwise, per-image-norm and batch-norm kernels; the whole
MobileNet forward (shipped weights) eager and replayed as a CUDA graph (fresh input each
replay); the whole CocoPoseNet forward (random weights) GPU vs the CPU path.

    python bench/gpu_check.py            # on a GPU machine (exit 1 if a check fails)
    python bench/gpu_check.py --cpu      # rehearsal: the NumPy backend, small sizes

Prints one ``CHECK name ok|FAIL error limit`` line per check, then ``CHECK_SUMMARY``.
"""
import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import compat  # noqa: E402,F401  (before chainer: Chainer 7.8.1 on NumPy 2)

import chainer  # noqa: E402
import chainer.functions as F  # noqa: E402

from models import _gpu  # noqa: E402

LIMITS = {'fp32': 1e-5, 'tf32': 5e-3, 'bf16': 3e-2, 'fp16': 5e-3}
RESULTS = []


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)):
        return float('inf')  # NaN: an output element nobody wrote (poisoned) or overflow
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def report(name, err, limit, extra=''):
    ok = err <= limit
    RESULTS.append((name, ok))
    print('CHECK %-44s %-4s err %.3g  limit %.3g %s' % (name, 'ok' if ok else 'FAIL', err, limit,
                                                        extra), flush=True)


def poisoned(base):
    """``base`` whose every allocation comes back filled with NaN (0xffff for 16-bit)."""
    class Poisoned(type(base)):
        def empty(self, shape, dtype=np.float32):
            a = self.xp.empty(shape, dtype)
            a.fill(np.nan if np.dtype(dtype).kind == 'f' else 0xffff)
            return a
    p = Poisoned.__new__(Poisoned)
    p.__dict__.update(base.__dict__)
    return p


class Ctx(object):
    def __init__(self, cpu):
        self.cpu = cpu
        if cpu:
            self.be = _gpu.ReferenceBackend()
            self.xp = np
        else:
            import cupy
            self.xp = cupy
            self.be = _gpu.GpuBackend()
        self.pbe = poisoned(self.be)
        self.rng = np.random.default_rng(int(time.time() * 1e6) % 2 ** 32)

    def dev(self, a):
        return self.xp.asarray(a)

    def host(self, a):
        return a.get() if hasattr(a, 'get') else np.asarray(a)

    def randn(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)


def check_convolutions(ctx):
    # (N, C, H, W, O, k, stride, same): the RGB layer, a front 3x3, the wide 7x7 stage layer,
    # a 1x1 head, MobileNet's stride-2 SAME stem
    cases = [(2, 3, 47, 61, 64, 3, 1, False), (2, 128, 46, 41, 128, 3, 1, False),
             (2, 185, 23, 41, 128, 7, 1, False), (3, 128, 23, 41, 38, 1, 1, False),
             (2, 3, 37, 50, 16, 3, 2, True)]
    if ctx.cpu:
        cases = [(2, 3, 9, 11, 8, 3, 1, False), (2, 12, 7, 9, 6, 7, 1, False),
                 (2, 6, 5, 7, 4, 1, 1, False), (2, 3, 9, 8, 5, 3, 2, True)]
    for n, c, h, w, o, k, stride, same in cases:
        if same:
            pads = _gpu.same_pads(h, w, k, stride)
        else:
            pads = (k // 2, k // 2, h, w)
        x = ctx.randn(n, c, h, w)
        W = ctx.randn(o, c, k, k, scale=1 / np.sqrt(c * k * k))
        b = ctx.randn(o, scale=0.1)
        x64 = np.pad(x, ((0, 0), (0, 0), (pads[0], (pads[2] - 1) * stride + k - h - pads[0]),
                         (pads[1], (pads[3] - 1) * stride + k - w - pads[1]))).astype(np.float64)
        for mode in _gpu.PRECISIONS:
            relu = not same
            act = _gpu.ACT_RELU if relu else _gpu.ACT_NONE
            y, Wq = _gpu.conv_forward(ctx.pbe, ctx.dev(x), ctx.dev(W), ctx.dev(b), stride, pads,
                                      act, mode)
            yh = ctx.host(y)
            xv, Wv, bv = (chainer.Variable(a) for a in (x64, W.astype(np.float64),
                                                        b.astype(np.float64)))
            yr = F.convolution_2d(xv, Wv, bv, stride=stride)
            ref = np.maximum(yr.array, 0) if relu else yr.array
            name = 'conv %dx%d %d->%d s%d %s' % (k, k, c, o, stride, mode)
            report(name + ' fwd', rel_err(yh, ref), LIMITS[mode])
            gy = ctx.randn(*yh.shape)
            gx, gW, gb = _gpu.conv_backward(ctx.pbe, ctx.dev(x), ctx.dev(W), Wq, y, ctx.dev(gy),
                                            stride, pads, act, mode)
            yr.grad = (gy * (yh > 0) if relu else gy).astype(np.float64)
            yr.backward()
            gx_ref = xv.grad[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + w]
            worst = max(rel_err(ctx.host(gx), gx_ref), rel_err(ctx.host(gW), Wv.grad),
                        rel_err(ctx.host(gb), bv.grad))
            report(name + ' bwd', worst, LIMITS[mode] * 2)


def check_mobilenet_layers(ctx):
    from models.MobileNetV2PoseNet import depthwise_same, InstanceNormalization
    import chainer.links as L
    n, c, h, w = (2, 96, 46, 82) if not ctx.cpu else (2, 5, 9, 11)
    for stride in (1, 2):
        x = ctx.randn(n, c, h, w)
        Wd = ctx.randn(1, c, 3, 3)
        pads = _gpu.same_pads(h, w, 3, stride)
        y = ctx.pbe.depthwise(ctx.dev(x), ctx.dev(Wd[0]), stride, *pads)
        ref = depthwise_same(x.astype(np.float64), Wd.astype(np.float64), stride).array
        report('depthwise 3x3 SAME s%d' % stride, rel_err(ctx.host(y), ref), 1e-6)
    x = ctx.randn(n, c, h, w, scale=3.0) + 1.5
    res = ctx.randn(n, c, h, w)
    norm = InstanceNormalization(c)
    norm.gamma.array[...] = ctx.randn(c)
    norm.beta.array[...] = ctx.randn(c)
    norm64 = norm.copy(mode='copy')
    for p in norm64.params():
        p.array = p.array.astype(np.float64)
    ref = norm64(x.astype(np.float64)).array
    for act, f in ((_gpu.ACT_RELU6, lambda v: np.clip(v, 0, 6)), (_gpu.ACT_NONE, lambda v: v)):
        out = ctx.pbe.empty(x.shape)
        out = ctx.pbe.instance_norm_act(ctx.dev(x), out, ctx.dev(norm.gamma.array),
                                        ctx.dev(norm.beta.array),
                                        None if act else ctx.dev(res), norm.eps, act)
        report('instance norm act%d%s' % (act, '' if act else ' +residual'),
               rel_err(ctx.host(out), f(ref) + (0 if act else res)), 1e-5)
    bn = L.BatchNormalization(c, eps=1e-3)
    bn.avg_mean[...] = ctx.randn(c)
    bn.avg_var[...] = np.abs(ctx.randn(c)) + 0.05
    bn.gamma.array[...] = ctx.randn(c)
    bn.beta.array[...] = ctx.randn(c)
    s = bn.gamma.array.astype(np.float64) / np.sqrt(bn.avg_var.astype(np.float64) + bn.eps)
    ref = np.maximum(x * s[:, None, None] + (bn.beta.array - bn.avg_mean * s)[:, None, None], 0)
    y = ctx.pbe.affine_act(ctx.dev(x), *(ctx.dev(a) for a in (bn.gamma.array, bn.beta.array,
                                                               bn.avg_mean, bn.avg_var)),
                           bn.eps, _gpu.ACT_RELU)
    report('batch norm + relu', rel_err(ctx.host(y), ref), 1e-5)


def float64_model(model):
    m = model.copy(mode='copy')
    m.to_device('@numpy')
    for p in m.params():
        p.array = np.asarray(p.array, np.float64)
    for link in m.links():
        for name in ('avg_mean', 'avg_var'):
            if hasattr(link, name):
                setattr(link, name, np.asarray(getattr(link, name), np.float64))
    return m


def check_mobilenet(ctx):
    from models import load_model
    model = load_model('mobilenet', os.path.join(REPO, 'models', 'mobilenet_v2_small.npz'))
    h, w = (368, 656) if not ctx.cpu else (64, 96)
    x = (ctx.rng.random((1, 3, h, w)) * 255).astype(np.float32)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        rp, rh = float64_model(model).forward_functions(x.astype(np.float64))
    refs = [a.array for a in rp + rh]
    if not ctx.cpu:
        model.to_gpu()
    pafs, heatmaps = _gpu.mobilenet_forward(model, ctx.dev(x), ctx.pbe)
    err = max(rel_err(ctx.host(a), r) for a, r in zip(pafs + heatmaps, refs))
    report('mobilenet forward %dx%d vs float64' % (h, w), err, 1e-4)
    if ctx.cpu:
        return
    # CUDA graph: the GRAPH_AFTER-th call of a shape is captured and replayed; a new input
    # each call must give that input's eager result
    os.environ.pop('POSE_GPU_GRAPHS', None)
    worst, xs = 0.0, [(ctx.rng.random((1, 3, h, w)) * 255).astype(np.float32)
                      for _ in range(_gpu.GRAPH_AFTER + 2)]
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for xi in xs:
            p, hm = model(ctx.dev(xi))
            eager = _gpu.mobilenet_forward(model, ctx.dev(xi), ctx.be)
            worst = max([worst] + [rel_err(ctx.host(a.array), ctx.host(b))
                                   for a, b in zip(p + hm, eager[0] + eager[1])])
    captured = len(_gpu._graphs.graphs)
    report('mobilenet CUDA graph replay vs eager', worst if captured else float('inf'), 1e-6,
           '(graphs captured: %d)' % captured)


def check_posenet(ctx):
    from models import CocoPoseNet as C
    model = C.CocoPoseNet()
    h, w = (184, 208) if not ctx.cpu else (32, 40)
    x = ctx.rng.random((1, 3, h, w)).astype(np.float32) - 0.5
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        rp, rh = model(x)  # the CPU fast path
        refs = [rp[-1].array, rh[-1].array]
        if not ctx.cpu:
            model.to_gpu()
        for mode in _gpu.PRECISIONS:
            os.environ[_gpu.PRECISION_ENV] = mode
            if ctx.cpu:  # rehearsal: the GPU path's code on NumPy arrays (ReferenceBackend)
                saved = C.use_fast_path, _gpu.is_gpu_array
                C.use_fast_path, _gpu.is_gpu_array = (lambda a: False), (lambda a: True)
                try:
                    gp, gh = model(x)
                finally:
                    C.use_fast_path, _gpu.is_gpu_array = saved
            else:
                gp, gh = model(ctx.dev(x))
            err = max(rel_err(ctx.host(gp[-1].array), refs[0]),
                      rel_err(ctx.host(gh[-1].array), refs[1]))
            report('posenet maps GPU %s vs CPU' % mode, err,
                   {'fp32': 1e-4, 'tf32': 1e-2, 'bf16': 5e-2, 'fp16': 1e-2}[mode])
    os.environ.pop(_gpu.PRECISION_ENV, None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--cpu', action='store_true', help='rehearsal on the CPU (NumPy backend)')
    args = p.parse_args(argv)
    ctx = Ctx(args.cpu)
    for check in (check_convolutions, check_mobilenet_layers, check_mobilenet, check_posenet):
        t = time.perf_counter()
        try:
            check(ctx)
        except Exception as e:  # report and go on with the next group
            import traceback
            traceback.print_exc()
            report('%s raised %s' % (check.__name__, type(e).__name__), float('inf'), 0)
        print('# %s: %.1f s' % (check.__name__, time.perf_counter() - t), flush=True)
    failed = [n for n, ok in RESULTS if not ok]
    print('CHECK_SUMMARY %d ok, %d failed%s' % (len(RESULTS) - len(failed), len(failed),
                                                 (': ' + '; '.join(failed)) if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
