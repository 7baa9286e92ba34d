// Sort the decoded candidates and run greedy NMS on them, one block per image; write at most
// max_det detections in original-image pixels and their count.
//
// The reference is yolo_nano.core.postprocess (batched_nms / nms, then scale_boxes): candidates by
// descending score, equal scores by lower candidate index; a candidate is removed when its IoU with a
// kept candidate (of the same class unless class_agnostic) is strictly greater than iou_thr, with the
// reference's float32 expression inter / (area_i + area_j - inter) (a NaN IoU never removes); stop at
// max_det kept. Inputs are decode.cu's records, keys and counts (see there).

// ---- sort_candidates: bitonic sort of each image's keys, ascending (= descending score, then index).
// keys: (n, key_cap), key_cap a power of two >= every count. Sorted in shared memory when the padded
// count fits, else in place in global memory. Grid (n), block SORT_THREADS.

#define SORT_SHARED 4096
#define SORT_THREADS 512

__device__ void bitonic_sort(unsigned long long* k, int npow)
{
    for (int size = 2; size <= npow; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < (npow >> 1); i += blockDim.x) {
                const int lo = 2 * i - (i & (stride - 1));
                const int hi = lo + stride;
                const unsigned long long a = k[lo], b = k[hi];
                if ((a > b) == ((lo & size) == 0)) {
                    k[lo] = b;
                    k[hi] = a;
                }
            }
            __syncthreads();
        }
    }
}

extern "C" __global__ void sort_candidates(unsigned long long* __restrict__ keys, const int* __restrict__ counts,
                                           int key_cap)
{
    __shared__ unsigned long long s_keys[SORT_SHARED];
    unsigned long long* k = keys + (long long)blockIdx.x * key_cap;
    int n = counts[2 * blockIdx.x];
    if (n > key_cap) n = key_cap;
    int npow = 1;
    while (npow < n) npow <<= 1;
    if (npow < 2) return;  // the same for every thread of the block
    if (npow <= SORT_SHARED) {
        for (int i = threadIdx.x; i < npow; i += blockDim.x) s_keys[i] = i < n ? k[i] : ~0ull;
        __syncthreads();
        bitonic_sort(s_keys, npow);
        for (int i = threadIdx.x; i < n; i += blockDim.x) k[i] = s_keys[i];
    } else {
        for (int i = n + threadIdx.x; i < npow; i += blockDim.x) k[i] = ~0ull;
        __syncthreads();
        bitonic_sort(k, npow);
    }
}

// ---- nms: greedy NMS over the sorted keys in chunks of NMS_CHUNK candidates (one per thread). Each
// candidate is tested against the boxes kept by earlier chunks; then each builds the mask of the
// chunk's earlier candidates that would remove it, and thread 0 walks the chunk in order keeping a
// candidate when no kept one of the chunk is in its mask. The q-th kept candidate's record index goes
// to keys[q] (a key already read: q never passes the chunk being decided), so later chunks read kept
// boxes from the records in device memory; `out` (mapped host memory on a Jetson) is only written, at
// the end: boxes mapped to the original image and clipped (boxmap per image = left, top, scale
// (float32), width, height (original pixels), unused).
// out: (n, max_det, 6) = x1, y1, x2, y2, score, class; out_count: (n). Grid (n), block NMS_CHUNK.

#define NMS_CHUNK 64

__device__ __forceinline__ bool nms_removes(float ax1, float ay1, float ax2, float ay2, float a_area, float bx1,
                                            float by1, float bx2, float by2, float b_area, float thr)
{
    float inter = fminf(ax2, bx2) - fmaxf(ax1, bx1);
    float h = fminf(ay2, by2) - fmaxf(ay1, by1);
    inter = fmaxf(inter, 0.0f) * fmaxf(h, 0.0f);
    return inter / (a_area + b_area - inter) > thr;
}

extern "C" __global__ void nms(unsigned long long* __restrict__ keys, const float* __restrict__ records,
                               const int* __restrict__ counts, const float* __restrict__ boxmap,
                               float* __restrict__ out, int* __restrict__ out_count, int total, int key_cap,
                               int max_det, float iou_thr, int class_agnostic)
{
    __shared__ float c_x1[NMS_CHUNK], c_y1[NMS_CHUNK], c_x2[NMS_CHUNK], c_y2[NMS_CHUNK];
    __shared__ float c_area[NMS_CHUNK];
    __shared__ int c_cls[NMS_CHUNK], c_alive[NMS_CHUNK];
    __shared__ unsigned c_index[NMS_CHUNK];
    __shared__ unsigned long long c_mask[NMS_CHUNK];
    __shared__ int s_kept, s_done;

    const int img = blockIdx.x, t = threadIdx.x;
    int n = counts[2 * img];
    if (n > total) n = total;
    unsigned long long* k = keys + (long long)img * key_cap;
    const float* rec = records + (long long)img * total * 8;
    float* o = out + (long long)img * max_det * 6;
    if (t == 0) {
        s_kept = 0;
        s_done = n == 0 || max_det <= 0;
    }
    __syncthreads();

    for (int base = 0; !s_done; base += NMS_CHUNK) {
        const int j = base + t;
        bool alive = j < n;
        float x1 = 0.0f, y1 = 0.0f, x2 = 0.0f, y2 = 0.0f, area = 0.0f;
        int cls = 0;
        unsigned index = 0;
        if (alive) {
            index = (unsigned)(k[j] & 0xffffffffull);
            const float* r = rec + (long long)index * 8;
            x1 = r[0];
            y1 = r[1];
            x2 = r[2];
            y2 = r[3];
            cls = (int)r[5];
            area = (x2 - x1) * (y2 - y1);
        }
        const int kept = s_kept;
        for (int q = 0; alive && q < kept; ++q) {
            const float* w = rec + (long long)k[q] * 8;
            if (!class_agnostic && (int)w[5] != cls) continue;
            if (nms_removes(w[0], w[1], w[2], w[3], (w[2] - w[0]) * (w[3] - w[1]), x1, y1, x2, y2, area, iou_thr))
                alive = false;
        }
        c_x1[t] = x1;
        c_y1[t] = y1;
        c_x2[t] = x2;
        c_y2[t] = y2;
        c_area[t] = area;
        c_cls[t] = cls;
        c_index[t] = index;
        c_alive[t] = alive;
        __syncthreads();

        unsigned long long mask = 0;
        for (int s = 0; alive && s < t; ++s) {
            if (c_alive[s] && (class_agnostic || c_cls[s] == cls) &&
                nms_removes(c_x1[s], c_y1[s], c_x2[s], c_y2[s], c_area[s], x1, y1, x2, y2, area, iou_thr))
                mask |= 1ull << s;
        }
        c_mask[t] = mask;
        __syncthreads();

        if (t == 0) {
            unsigned long long kept_bits = 0;
            int kc = s_kept;
            for (int s = 0; s < NMS_CHUNK && kc < max_det; ++s) {
                if (c_alive[s] && (c_mask[s] & kept_bits) == 0) {
                    kept_bits |= 1ull << s;
                    k[kc++] = c_index[s];
                }
            }
            s_kept = kc;
            s_done = kc >= max_det || base + NMS_CHUNK >= n;
        }
        __syncthreads();
    }

    const float left = boxmap[img * 6 + 0], top = boxmap[img * 6 + 1], scale = boxmap[img * 6 + 2];
    const float width = boxmap[img * 6 + 3], height = boxmap[img * 6 + 4];
    const int kept = s_kept;
    for (int q = t; q < kept; q += blockDim.x) {
        const float* r = rec + (long long)k[q] * 8;
        float* w = o + q * 6;
        w[0] = fminf(fmaxf((r[0] - left) / scale, 0.0f), width);
        w[1] = fminf(fmaxf((r[1] - top) / scale, 0.0f), height);
        w[2] = fminf(fmaxf((r[2] - left) / scale, 0.0f), width);
        w[3] = fminf(fmaxf((r[3] - top) / scale, 0.0f), height);
        w[4] = r[4];
        w[5] = r[5];
    }
    if (t == 0) out_count[img] = kept;
}
