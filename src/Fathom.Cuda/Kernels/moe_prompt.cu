// A prompt's routed experts without the host (CudaBackend.Experts.cs): the routing's chosen ids are grouped by
// expert on the device, the experts' products run as one mmq launch per matrix kind over (row tile, token tile of an
// expert), and each token's weighted outputs are summed in the routing's order and added back, as the host path does.

// One block of 1024 threads. pairs = tokens·used chosen ids (floats, as route_experts writes them). Writes:
// segments[experts + 1] (expert e's rows are [segments[e], segments[e + 1])), order[p] = the token of grouped row p,
// slots[i] = the grouped row of pair i (-1 for an id outside [0, experts), which then contributes nothing),
// tiles = (expert, first row) of each tile of tile_tokens rows (the product kernel's: MMQ_TOKENS or MMQT_TOKENS),
// and their count. Rows of one expert come in no fixed
// order: each row's product depends on that row alone.
extern "C" __global__ void __launch_bounds__(1024) moe_group_rows(const float* __restrict__ ids, int pairs, int used, int experts,
                                                                  int* __restrict__ segments, int* __restrict__ order,
                                                                  int* __restrict__ slots, int2* __restrict__ tiles,
                                                                  int* __restrict__ tile_count, int tile_tokens)
{
    FATHOM_WAIT_PREVIOUS();
    extern __shared__ int cursor[]; // experts
    for (int e = threadIdx.x; e < experts; e += blockDim.x) cursor[e] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < pairs; i += blockDim.x)
    {
        float id = ids[i];
        if (id >= 0.0f && id < (float)experts) atomicAdd(&cursor[(int)id], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0)
    {
        int start = 0, count = 0;
        for (int e = 0; e < experts; e++)
        {
            int n = cursor[e];
            segments[e] = start;
            for (int p = start; p < start + n; p += tile_tokens) tiles[count++] = make_int2(e, p);
            cursor[e] = start;
            start += n;
        }
        segments[experts] = start;
        *tile_count = count;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < pairs; i += blockDim.x)
    {
        float id = ids[i];
        if (!(id >= 0.0f && id < (float)experts)) { slots[i] = -1; continue; }
        int p = atomicAdd(&cursor[(int)id], 1);
        order[p] = i / used;
        slots[i] = p;
    }
}

// x[t] = (sum over k of weights[t, k] · rows[slots[t, k]], k in the routing's order, each a multiply then an add) + x[t],
// as add_weighted_rows adds a decoded token's experts (and ExpertBatch the host path's). Grid: (width / 256 rounded up, tokens).
extern "C" __global__ void moe_add_expert_rows(float* __restrict__ x, const float* __restrict__ rows,
                                               const float* __restrict__ weights, const int* __restrict__ slots, int used, int width)
{
    FATHOM_WAIT_PREVIOUS();
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= width) return;
    i64 t = blockIdx.y;
    float sum = 0.0f;
    for (int n = 0; n < used; n++)
    {
        int slot = slots[t * used + n];
        if (slot >= 0) sum = rows[(i64)slot * width + k] * weights[t * used + n] + sum;
    }
    float* d = x + t * width + k;
    *d = sum + *d;
}
