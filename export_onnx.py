"""Export a pose net's Chainer weights to an ONNX file (dynamic batch, height and width).

    python export_onnx.py posenet models/coco_posenet.npz posenet.onnx
    python export_onnx.py facenet models/facenet.npz facenet.onnx
    python export_onnx.py handnet models/handnet.npz handnet.onnx
    python export_onnx.py mobilenet models/mobilenet_v2_small.npz mobilenet.onnx

The file has one input ``x`` (float32 N x 3 x H x W, prepared as for the Chainer net) and
the outputs of every stage, named as the Chainer net returns them: ``pafs_1 .. pafs_6`` and
``heatmaps_1 .. heatmaps_6`` for the body nets, ``heatmaps_1 .. heatmaps_6`` for face and
hand.  The architecture is stored in the metadata (``arch``).  Run it with
``onnx_backend.OnnxNet`` (``--backend onnx`` of the detectors and demos) or any ONNX runtime.
The graph and its exactness: ``models/_onnx.py``.
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse
import os

import cli
from entity import params
from models import load_model
from models._onnx import import_onnx, to_onnx

ARCHS = tuple(params['archs'])


def export(arch, weights_file, out_path):
    """Write the ONNX file of ``arch`` with ``weights_file``'s weights to ``out_path``."""
    if arch not in ARCHS:
        raise cli.UserError('unknown architecture %r (known: %s)' % (arch, ', '.join(ARCHS)))
    cli.check_outputs([('OUT', out_path)], [('WEIGHTS', weights_file)])
    import_onnx()  # fail before loading weights
    model = load_model(arch, weights_file)
    data = to_onnx(model, arch).SerializeToString()
    cli.write_bytes_atomic(out_path, data)
    return len(data)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a pose net to ONNX (dynamic N, H, W).')
    p.add_argument('arch', choices=ARCHS, help='network architecture')
    p.add_argument('weights', help='Chainer weights (.npz, from convert_model.py)')
    p.add_argument('out', help='ONNX file to write')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if os.path.isdir(args.out):
        raise cli.UserError('%s: is a directory' % args.out)
    n = export(args.arch, args.weights, args.out)
    print('Wrote %s (%s, %.1f MB)' % (args.out, args.arch, n / 1e6))
    return 0


if __name__ == '__main__':
    cli.run_main(main)
