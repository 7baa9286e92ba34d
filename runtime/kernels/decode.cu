// Decode the raw YOLO heads where they lie, fused with the confidence threshold: one thread per anchor
// and cell of every head, for every image.
//
// The reference is yolo_nano.core.postprocess.decode; this kernel gives the same bits. The objectness
// logit is tested first (float32, against logit(conf) - margin); only a cell that passes reads its box
// and class logits. The class is the first maximal logit. Score and box are computed in double and
// rounded to float32 once, as numpy does. Non-finite outputs (an FP16/INT8 overflow) are dropped and
// counted: a cell whose objectness is not finite, or which passes and has a non-finite box or class
// logit or decoded box. The class filter (optional) applies after those checks, as in the reference.
//
// heads: 8 int64 per head: device pointer of its float32 (batch, A*(5+C), S_h, S_w) buffer, S_h, S_w, A,
// stride (pixels), index of its first anchor in `anchors`, index of its first candidate (heads in
// metadata order, anchor-major then cell: the reference's candidate order), unused.
// anchors: (sum A, 2) double, pixels. class_mask: num_classes ints (1 keeps the class) or null.
// Survivors: records[img][g] = x1, y1, x2, y2, score, class, 0, 0 (float32, g the candidate index, so
// `records` has room for every anchor of every cell), and keys[img][slot] = (~score bits) << 32 | g with
// slot from an atomic counter: ascending keys are descending scores, equal scores by lower index.
// counts[img] = {survivors, non-finite}: zeroed by the caller before the launch.
// Grid (ceil(total / 128), n), block 128.

#define MAX_LOG_WH 30.0

__device__ __forceinline__ bool decode_finite(float v)
{
    return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u;
}

__device__ __forceinline__ double decode_sigmoid(double v)
{
    return 1.0 / (1.0 + exp(-v));
}

extern "C" __global__ void decode(const long long* __restrict__ heads, int n_heads,
                                  const double* __restrict__ anchors, int num_classes, int softmax,
                                  float logit_thr, float conf, const int* __restrict__ class_mask, int total,
                                  int key_cap, float* __restrict__ records, unsigned long long* __restrict__ keys,
                                  int* __restrict__ counts)
{
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    const int img = blockIdx.y;
    if (g >= total) return;
    int h = 0;
    while (h + 1 < n_heads && g >= (int)heads[8 * (h + 1) + 6]) ++h;
    const long long* hp = heads + 8 * h;
    const int sh = (int)hp[1], sw = (int)hp[2], na = (int)hp[3];
    const int cells = sh * sw;
    const int local = g - (int)hp[6];
    const int a = local / cells, cell = local % cells;
    const int ch = 5 + num_classes;
    const float* p = (const float*)(size_t)hp[0] + ((long long)img * na * ch + (long long)a * ch) * cells + cell;

    const float obj = p[4 * cells];
    if (!decode_finite(obj)) {
        atomicAdd(&counts[2 * img + 1], 1);
        return;
    }
    if (!(obj > logit_thr)) return;
    const float tx = p[0], ty = p[cells], tw = p[2 * cells], th = p[3 * cells];
    bool finite = decode_finite(tx) && decode_finite(ty) && decode_finite(tw) && decode_finite(th);
    int cls = 0;
    float best = p[5 * cells];
    finite = finite && decode_finite(best);
    for (int c = 1; c < num_classes; ++c) {
        const float l = p[(5 + c) * cells];
        finite = finite && decode_finite(l);
        if (l > best) {
            best = l;
            cls = c;
        }
    }
    if (!finite) {
        atomicAdd(&counts[2 * img + 1], 1);
        return;
    }
    double prob;
    if (softmax) {
        double sum = 0.0;
        for (int c = 0; c < num_classes; ++c) sum += exp((double)p[(5 + c) * cells] - (double)best);
        prob = 1.0 / sum;
    } else {
        prob = decode_sigmoid((double)best);
    }
    const float score = (float)(decode_sigmoid((double)obj) * prob);
    if (!(score > conf)) return;

    const double stride = (double)hp[4];
    const double cx = (decode_sigmoid((double)tx) + (double)(cell % sw)) * stride;
    const double cy = (decode_sigmoid((double)ty) + (double)(cell / sw)) * stride;
    const double* anchor = anchors + 2 * ((int)hp[5] + a);
    const double half_w = anchor[0] * exp(fmin((double)tw, MAX_LOG_WH)) * 0.5;
    const double half_h = anchor[1] * exp(fmin((double)th, MAX_LOG_WH)) * 0.5;
    const float x1 = (float)(cx - half_w), y1 = (float)(cy - half_h);
    const float x2 = (float)(cx + half_w), y2 = (float)(cy + half_h);
    if (!(decode_finite(x1) && decode_finite(y1) && decode_finite(x2) && decode_finite(y2))) {
        atomicAdd(&counts[2 * img + 1], 1);
        return;
    }
    if (class_mask != 0 && !class_mask[cls]) return;

    float* r = records + ((long long)img * total + g) * 8;
    r[0] = x1;
    r[1] = y1;
    r[2] = x2;
    r[3] = y2;
    r[4] = score;
    r[5] = (float)cls;
    r[6] = 0.0f;
    r[7] = 0.0f;
    const int slot = atomicAdd(&counts[2 * img], 1);
    keys[(long long)img * key_cap + slot] =
        ((unsigned long long)(0xffffffffu - __float_as_uint(score)) << 32) | (unsigned long long)(unsigned)g;
}
