// CUDA kernels of the GPU path (models/_gpu.py), compiled by CuPy's RawModule (NVRTC).
// No CUDA headers are included, so the source compiles with NVRTC alone; 16-bit operands
// (bf16, fp16) are stored as unsigned short and converted here.  The index arithmetic of
// every kernel is mirrored line by line by the NumPy backend in models/_gpu.py
// (ReferenceBackend), which the CPU tests check against Chainer's functions.
//
// Layouts (all C-contiguous):
//   x      (N, C, H, W) float32 activations
//   col    (N, C*k*k, OH*OW) in T: row c*k*k + ky*k + kx holds the input pixel under kernel
//          tap (ky, kx) of every output pixel, so W.reshape(O, C*k*k) @ col[n] is image n's
//          output in NCHW (a GEMM-ready im2col: no transposes before or after the GEMM)
//   y      (N, O, OH*OW) float32
// Padding is (top, left) explicitly, so TensorFlow's asymmetric SAME padding (stride 2:
// nothing before, one after) is the same kernel with pad_top = pad_left = 0.

typedef unsigned short u16;
typedef long long i64;

__device__ __forceinline__ u16 f32_to_bf16(float f) {
    // round to nearest even; NaN stays a (quiet) NaN
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}
__device__ __forceinline__ float bf16_to_f32(u16 h) {
    return __uint_as_float(((unsigned int)h) << 16);
}
__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}
__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

struct F32 {
    typedef float T;
    static __device__ __forceinline__ T put(float v) { return v; }
    static __device__ __forceinline__ float get(T v) { return v; }
};
struct BF16 {
    typedef u16 T;
    static __device__ __forceinline__ T put(float v) { return f32_to_bf16(v); }
    static __device__ __forceinline__ float get(T v) { return bf16_to_f32(v); }
};
struct F16 {
    typedef u16 T;
    static __device__ __forceinline__ T put(float v) { return f32_to_f16(v); }
    static __device__ __forceinline__ float get(T v) { return f16_to_f32(v); }
};

#define GRID_STRIDE(i, total) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (i64)blockDim.x * gridDim.x)

// col[n, (c*k + ky)*k + kx, oy*OW + ox] = x[n, c, oy*s + ky - pt, ox*s + kx - pl] (0 outside)
template <class P>
__device__ void im2col(const float* __restrict__ x, typename P::T* __restrict__ col,
                       int C, int H, int W, int k, int s, int pt, int pl, int OH, int OW,
                       i64 total) {
    const i64 P_ = (i64)OH * OW;
    GRID_STRIDE(i, total) {
        i64 p = i % P_;
        i64 r = i / P_;           // n * C*k*k + (c*k + ky)*k + kx
        int kx = (int)(r % k);
        int ky = (int)((r / k) % k);
        i64 nc = r / ((i64)k * k); // n * C + c
        int ox = (int)(p % OW);
        int oy = (int)(p / OW);
        int iy = oy * s + ky - pt;
        int ix = ox * s + kx - pl;
        float v = 0.f;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = x[(nc * H + iy) * W + ix];
        col[i] = P::put(v);
    }
}

// The adjoint of im2col, as a gather (no atomics): each input pixel sums the column entries
// that read it.  gx[n, c, iy, ix] = sum over (ky, kx) with oy = (iy + pt - ky) / s and
// ox = (ix + pl - kx) / s whole and inside the output of gcol[n, (c*k + ky)*k + kx, oy*OW + ox].
template <class P>
__device__ void col2im(const typename P::T* __restrict__ gcol, float* __restrict__ gx,
                       int C, int H, int W, int k, int s, int pt, int pl, int OH, int OW,
                       i64 total) {
    GRID_STRIDE(i, total) {
        int ix = (int)(i % W);
        int iy = (int)((i / W) % H);
        i64 nc = i / ((i64)H * W);
        const typename P::T* base = gcol + nc * k * k * (i64)OH * OW;
        float acc = 0.f;
        for (int ky = 0; ky < k; ++ky) {
            int ty = iy + pt - ky;
            if (ty < 0 || ty % s) continue;
            int oy = ty / s;
            if (oy >= OH) continue;
            for (int kx = 0; kx < k; ++kx) {
                int tx = ix + pl - kx;
                if (tx < 0 || tx % s) continue;
                int ox = tx / s;
                if (ox >= OW) continue;
                acc += P::get(base[((i64)(ky * k + kx) * OH + oy) * OW + ox]);
            }
        }
        gx[i] = acc;
    }
}

template <class P>
__device__ void cast(const float* __restrict__ x, typename P::T* __restrict__ y, i64 total) {
    GRID_STRIDE(i, total) { y[i] = P::put(x[i]); }
}

// 16-bit copy of the ReLU's gradient: g = y > 0 ? gy : 0 (y: the ReLU's output).
template <class P>
__device__ void relu_grad(const float* __restrict__ gy, const float* __restrict__ y,
                          float* __restrict__ g32, typename P::T* __restrict__ g, i64 total) {
    GRID_STRIDE(i, total) {
        float v = y[i] > 0.f ? gy[i] : 0.f;
        if (g32) g32[i] = v;
        if (g) g[i] = P::put(v);
    }
}

#define INSTANTIATE(P, SUF)                                                                  \
extern "C" __global__ void im2col_##SUF(const float* x, P::T* col, int C, int H, int W,     \
        int k, int s, int pt, int pl, int OH, int OW, i64 total) {                          \
    im2col<P>(x, col, C, H, W, k, s, pt, pl, OH, OW, total);                                 \
}                                                                                            \
extern "C" __global__ void col2im_##SUF(const P::T* gcol, float* gx, int C, int H, int W,   \
        int k, int s, int pt, int pl, int OH, int OW, i64 total) {                          \
    col2im<P>(gcol, gx, C, H, W, k, s, pt, pl, OH, OW, total);                               \
}                                                                                            \
extern "C" __global__ void cast_##SUF(const float* x, P::T* y, i64 total) {                 \
    cast<P>(x, y, total);                                                                    \
}                                                                                            \
extern "C" __global__ void relu_grad_##SUF(const float* gy, const float* y, float* g32,     \
        P::T* g, i64 total) {                                                                \
    relu_grad<P>(gy, y, g32, g, total);                                                      \
}

INSTANTIATE(F32, f32)
INSTANTIATE(BF16, bf16)
INSTANTIATE(F16, f16)

// act: 0 none, 1 ReLU, 2 ReLU6
__device__ __forceinline__ float activate(float v, int act) {
    if (act == 1) return fmaxf(v, 0.f);
    if (act == 2) return fminf(fmaxf(v, 0.f), 6.f);
    return v;
}

// In place on y (N, O, HW): y = act(y * scale[o] + shift[o]).  bias: scale = NULL (1), shift
// = b.  Stored-statistics batch norm: scale = gamma / sqrt(var + eps), shift = beta -
// mean * scale, computed here from the four vectors (mean != NULL) so that no folded copy of
// the parameters has to be kept in step with them.
extern "C" __global__ void affine_act(float* y, const float* gamma, const float* beta,
                                      const float* mean, const float* var, float eps,
                                      int O, i64 HW, int act, i64 total) {
    GRID_STRIDE(i, total) {
        int o = (int)((i / HW) % O);
        float v = y[i];
        if (mean) {
            float s = gamma[o] * rsqrtf(var[o] + eps);
            v = v * s + (beta[o] - mean[o] * s);
        } else if (beta) {
            v += beta[o];
        }
        y[i] = activate(v, act);
    }
}

// Depthwise convolution, channel multiplier 1, explicit (top, left) padding (TensorFlow SAME
// when those are SAME's), any stride: y[n, c, oy, ox] = sum over (ky, kx) of
// w[c, ky, kx] * x[n, c, oy*s + ky - pt, ox*s + kx - pl] (0 outside).
extern "C" __global__ void depthwise(const float* __restrict__ x, const float* __restrict__ w,
                                     float* __restrict__ y, int C, int H, int W, int k, int s,
                                     int pt, int pl, int OH, int OW, i64 total) {
    GRID_STRIDE(i, total) {
        int ox = (int)(i % OW);
        int oy = (int)((i / OW) % OH);
        i64 nc = i / ((i64)OH * OW);
        int c = (int)(nc % C);
        const float* plane = x + nc * H * (i64)W;
        const float* wc = w + (i64)c * k * k;
        float acc = 0.f;
        for (int ky = 0; ky < k; ++ky) {
            int iy = oy * s + ky - pt;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < k; ++kx) {
                int ix = ox * s + kx - pl;
                if (ix < 0 || ix >= W) continue;
                acc += wc[ky * k + kx] * plane[(i64)iy * W + ix];
            }
        }
        y[i] = acc;
    }
}

// Per-image normalisation (TensorFlow's training-mode FusedBatchNorm on one image): one block
// per (n, c) plane of x (N*C planes of HW values): mean, then the biased variance of the
// centred values (two passes, as the CPU path), then
// y = act((x - mean) / sqrt(var + eps) * gamma[c] + beta[c]) (+ residual, after act).
// y may be x (each value is read, then written, by the same thread).  blockDim.x must be
// NORM_THREADS.
#define NORM_THREADS 256
__device__ float block_sum(float v, float* shared) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < NORM_THREADS / 32 ? shared[lane] : 0.f;
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    float total = shared[0];
    __syncthreads();  // shared[] is reused by the next call
    return total;
}

extern "C" __global__ void __launch_bounds__(NORM_THREADS)
instance_norm_act(const float* x, float* y, const float* __restrict__ gamma,
                  const float* __restrict__ beta, const float* residual, int C, i64 HW,
                  float eps, int act) {
    __shared__ float shared[NORM_THREADS / 32];
    i64 plane = blockIdx.x;
    int c = (int)(plane % C);
    const float* xp = x + plane * HW;
    float s = 0.f;
    for (i64 j = threadIdx.x; j < HW; j += NORM_THREADS) s += xp[j];
    float mean = block_sum(s, shared) / (float)HW;
    float q = 0.f;
    for (i64 j = threadIdx.x; j < HW; j += NORM_THREADS) {
        float d = xp[j] - mean;
        q += d * d;
    }
    float var = block_sum(q, shared) / (float)HW;
    float scale = gamma[c] * rsqrtf(var + eps);
    float shift = beta[c];
    float* yp = y + plane * HW;
    const float* rp = residual ? residual + plane * HW : 0;
    for (i64 j = threadIdx.x; j < HW; j += NORM_THREADS) {
        float v = activate((xp[j] - mean) * scale + shift, act);
        if (rp) v += rp[j];
        yp[j] = v;
    }
}
