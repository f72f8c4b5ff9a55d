/* Depthwise (channel multiplier 1) k x k convolution of one image, TensorFlow SAME
 * padding, float32, channels-first: the kernel of MobileNetV2PoseNet's CPU path.
 *
 * Why C: the net has ~40 depthwise layers, ~4,800 channels per forward, and one OpenCV
 * filter2D call per channel spends most of the forward in Python binding overhead; this
 * loop is one call per layer (figures: bench/RESULTS.md).  Single-threaded on purpose: an
 * OpenMP version's spinning workers starved OpenBLAS's threads in the GEMMs between the
 * depthwise layers.
 *
 * Built on first use by models/_native.py (cc -O3 -march=native); where no compiler
 * works, the Python side falls back on filter2D.  The sums run in the same order as
 * a direct correlation (no -ffast-math): results differ from other implementations
 * only by float32 rounding (tests/test_fast_path.py).
 */
#include <stdlib.h>
#include <string.h>

/* x: c planes of h x w floats, x_plane floats apart (rows contiguous).
 * kernels: c x k x k, contiguous.  SAME padding: `top` rows and `left` columns of zeros
 * before the image (and as many after as the last window needs).
 * out: c planes of oh x ow floats, out_plane floats apart.
 * Returns 0, or -1 when the scratch buffer cannot be allocated. */
int depthwise_conv2d_same(const float *x, long x_plane, int c, int h, int w,
                          const float *kernels, int k, int stride, int top, int left,
                          float *out, long out_plane, int oh, int ow)
{
    /* One zero-padded copy of a plane, reused for every channel: its border stays zero,
     * each channel overwrites only the image part. */
    const long pw = (long)(ow - 1) * stride + k, ph = (long)(oh - 1) * stride + k;
    float *pad = calloc((size_t)(ph * pw), sizeof(float));
    if (pad == NULL)
        return -1;
    /* rows/columns of the image that land inside the padded window */
    const long rows = (top + h < ph ? top + h : ph) - top;
    const long cols = (left + w < pw ? left + w : pw) - left;
    for (int ch = 0; ch < c; ch++) {
        const float *src = x + ch * x_plane;
        const float *kc = kernels + (long)ch * k * k;
        float *dst = out + ch * out_plane;
        for (long i = 0; i < rows; i++)
            memcpy(pad + (top + i) * pw + left, src + i * w, sizeof(float) * (size_t)cols);
        for (long i = 0; i < oh; i++) {
            float *o = dst + i * ow;
            const float *r0 = pad + i * stride * pw;
            if (k == 3) {
                /* the net's only kernel size: unrolled, the column loop vectorises */
                const float *r1 = r0 + pw, *r2 = r1 + pw;
                const float k0 = kc[0], k1 = kc[1], k2 = kc[2], k3 = kc[3], k4 = kc[4],
                            k5 = kc[5], k6 = kc[6], k7 = kc[7], k8 = kc[8];
                if (stride == 1) {
                    for (long j = 0; j < ow; j++)
                        o[j] = k0 * r0[j] + k1 * r0[j + 1] + k2 * r0[j + 2]
                             + k3 * r1[j] + k4 * r1[j + 1] + k5 * r1[j + 2]
                             + k6 * r2[j] + k7 * r2[j + 1] + k8 * r2[j + 2];
                } else {
                    for (long j = 0; j < ow; j++) {
                        const long q = j * stride;
                        o[j] = k0 * r0[q] + k1 * r0[q + 1] + k2 * r0[q + 2]
                             + k3 * r1[q] + k4 * r1[q + 1] + k5 * r1[q + 2]
                             + k6 * r2[q] + k7 * r2[q + 1] + k8 * r2[q + 2];
                    }
                }
            } else {
                for (long j = 0; j < ow; j++) {
                    float acc = 0.0f;
                    for (int a = 0; a < k; a++) {
                        const float *r = r0 + a * pw + j * stride;
                        for (int b = 0; b < k; b++)
                            acc += kc[a * k + b] * r[b];
                    }
                    o[j] = acc;
                }
            }
        }
    }
    free(pad);
    return 0;
}
