// Letterbox a batch of uint8 BGR frames of any sizes into the engine's float32 NCHW input, one launch.
//
// The reference is yolo_nano.core.preprocess: letterbox() (cv2.resize INTER_LINEAR to the rounded size:
// half-pixel centres, edges clamped, rounded to uint8; centred; pad_value around) then normalize_into()
// (channel order, x * scale, (x - mean) / std). Bilinear weights are float here and 11-bit fixed point in
// OpenCV: a resized pixel may differ by one grey level; padding and unresized copies are exact.
//
// frames: every frame packed, HxWx3 uint8 each. params: 8 int64 per frame: byte offset of the frame in
// `frames`, h0, w0 (original size), nh, nw (resized size), left, top (padding), unused.
// out: (n, 3, out_h, out_w) float32. Grid (ceil(out_w / 16), ceil(out_h / 16), n), block (16, 16).
// Compiled without FMA contraction (--fmad=false), like numpy's one rounding per operation.

extern "C" __global__ void letterbox(const unsigned char* __restrict__ frames, const long long* __restrict__ params,
                                     float* __restrict__ out, int out_h, int out_w, int pad_value, int rgb,
                                     float scale, float mean0, float mean1, float mean2, float std0, float std1,
                                     float std2, int plain)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z;
    if (x >= out_w || y >= out_h) return;
    const long long* p = params + 8 * b;
    const int h0 = (int)p[1], w0 = (int)p[2], nh = (int)p[3], nw = (int)p[4];
    const int rx = x - (int)p[5], ry = y - (int)p[6];
    float bgr[3];
    if (rx < 0 || ry < 0 || rx >= nw || ry >= nh) {
        bgr[0] = bgr[1] = bgr[2] = (float)pad_value;
    } else {
        const unsigned char* src = frames + p[0];
        // OpenCV's source coordinate of a destination pixel centre, clamped at the edges.
        float fx = ((float)rx + 0.5f) * ((float)w0 / (float)nw) - 0.5f;
        float fy = ((float)ry + 0.5f) * ((float)h0 / (float)nh) - 0.5f;
        int x0 = (int)floorf(fx), y0 = (int)floorf(fy);
        float ax = fx - (float)x0, ay = fy - (float)y0;
        if (x0 < 0) { x0 = 0; ax = 0.0f; }
        if (x0 >= w0 - 1) { x0 = w0 - 1; ax = 0.0f; }
        if (y0 < 0) { y0 = 0; ay = 0.0f; }
        if (y0 >= h0 - 1) { y0 = h0 - 1; ay = 0.0f; }
        const int x1 = x0 + (ax > 0.0f ? 1 : 0), y1 = y0 + (ay > 0.0f ? 1 : 0);
        const unsigned char* r0 = src + (long long)y0 * w0 * 3;
        const unsigned char* r1 = src + (long long)y1 * w0 * 3;
        for (int c = 0; c < 3; ++c) {
            const float top = (1.0f - ax) * (float)r0[x0 * 3 + c] + ax * (float)r0[x1 * 3 + c];
            const float bottom = (1.0f - ax) * (float)r1[x0 * 3 + c] + ax * (float)r1[x1 * 3 + c];
            float v = floorf((1.0f - ay) * top + ay * bottom + 0.5f);
            bgr[c] = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
        }
    }
    const float mean[3] = {mean0, mean1, mean2};
    const float stdv[3] = {std0, std1, std2};
    const long long plane = (long long)out_h * out_w;
    float* o = out + (long long)b * 3 * plane + (long long)y * out_w + x;
    for (int c = 0; c < 3; ++c) {
        float v = bgr[rgb ? 2 - c : c] * scale;
        if (!plain) v = (v - mean[c]) / stdv[c];
        o[c * plane] = v;
    }
}
