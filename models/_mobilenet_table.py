"""MobileNetV2PoseNet's structure (blocks, stages, widths), its padding rule and resize
matrix: one table that the Chainer net, the fast CPU and GPU forwards, the ONNX builder and
tfgraph's check read (through ``models.MobileNetV2PoseNet``, which re-exports it; the kernel
modules models/_mobilenet_fast.py and models/_gpu.py read it here, as the net imports them)."""
import numpy

BN_EPS = 1e-3  # epsilon of every FusedBatchNorm in the graph

# Backbone (MobileNetV2, depth multiplier 0.5): stem conv 3x3 stride 2 to 16
# channels, then the inverted-residual blocks (name, expansion, out channels,
# stride).  A block adds its input back when stride is 1 and channels match.
STEM_CHANNELS = 16
BLOCKS = [
    ('expanded_conv', 1, 8, 1),
    ('expanded_conv_1', 6, 16, 2),
    ('expanded_conv_2', 6, 16, 1),
    ('expanded_conv_3', 6, 16, 2),
    ('expanded_conv_4', 6, 16, 1),
    ('expanded_conv_5', 6, 16, 1),   # stride 8: the fine half of the features
    ('expanded_conv_6', 6, 32, 2),
    ('expanded_conv_7', 6, 32, 1),
    ('expanded_conv_8', 6, 32, 1),
    ('expanded_conv_9', 6, 32, 1),
    ('expanded_conv_10', 6, 48, 1),
    ('expanded_conv_11', 6, 48, 1),
    ('expanded_conv_12', 6, 48, 1),  # stride 16: upsampled to stride 8
]
FINE_BLOCK = 'expanded_conv_5'
COARSE_BLOCK = 'expanded_conv_12'

# Refinement: 6 stages x 2 branches, each 5 x (depthwise kxk -> pointwise 1x1
# -> batch norm -> ReLU), no ReLU after the last.  Stage 1 reads the 64-channel
# features, later stages concat(L1, L2, features) = 38 + 19 + 64 = 121 channels.
N_STAGES = 6
N_PAFS = 38
N_HEATMAPS = 19
BRANCH_OUT = {'L1': N_PAFS, 'L2': N_HEATMAPS}
STAGE_KSIZES = [3, 3, 3, 1, 1]
STAGE1_WIDTHS = [64, 64, 64, 256]
STAGE_WIDTHS = [64, 64, 64, 64]


def same_padding(size, ksize, stride):
    """TensorFlow ``SAME`` padding of one axis: ``(before, after)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + ksize - size, 0)
    return total // 2, total - total // 2


def interpolation_matrix_tf_legacy(out_size, in_size, dtype=numpy.float32):
    """``(out_size, in_size)`` matrix of TensorFlow's legacy bilinear resize on one
    axis: source = dst * in / out, floor, the next pixel clamped to the edge."""
    m = numpy.zeros((out_size, in_size), dtype=numpy.float64)
    scale = in_size / out_size
    for d in range(out_size):
        src = d * scale
        lo = int(numpy.floor(src))
        hi = min(lo + 1, in_size - 1)
        frac = src - lo
        m[d, lo] += 1 - frac
        m[d, hi] += frac
    return m.astype(dtype)
