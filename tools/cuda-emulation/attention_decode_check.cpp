// Kernels/attention_decode.cu run on the CPU (emulation.h) against a double-precision softmax attention: the general
// kernels for the seven shapes of DecodeAttentionTests (indices 0-6: single tokens and batches of 3, lengths 1 to
// 2,100 (one chunk, chunks of 8 to 16 keys, several key tiles per chunk, the chunk count at its merge limit), the
// position given directly and through a step pointer, as in a replayed decode step), and attention_decode_grouped
// (indices 7-12, check_grouped below) and attention_decode_mla (indices 13-15, check_mla). Each case must be within 1e-5 relative L2 (the GPU tests' tolerance) and leave
// every merge counter at zero. Usage: attention_decode_check [shape index: 0-6 general, 7-12 grouped, 13-15 MLA]. The host side mirrors
// CudaBackend.DecodeAttentionBatch and GroupedDecodeAttentionBatch.
#include "emulation.h"
#include "common.cuh"
__device__ __forceinline__ float exp_rounded(float x) { return (float)exp((double)x); } // as ops.cu
__device__ __forceinline__ int step_position(const int* step, int first_position) { return step ? first_position + *step : first_position; }
#include "attention_decode_emulated.cu"
#include <random>

typedef void (*Kernel)(const float*, const float*, const float*, char*, unsigned*, float*, int, int, int, int, int, int, float,
                       const int*, int, int, int, int);

typedef void (*GroupedKernel)(const float*, const float*, const float*, float*, unsigned*, float*, int, int, int, int, int, float,
                              const int*, int, int, int);

// Relative L2 of `output` against a double-precision softmax attention of tokens at positions position.. (token t
// attends to position + t + 1 positions).
static double reference_error(const std::vector<float>& queries, const float* keys, int keyWidth, const float* values, int valueStride,
                              const std::vector<float>& output, int heads, int kvHeads, int keyDim, int valueDim, int tokens, int position, float scale)
{
    int group = heads / kvHeads;
    double difference = 0, norm = 0;
    for (int t = 0; t < tokens; t++)
        for (int h = 0; h < heads; h++)
        {
            int kvHead = h / group, n = position + t + 1;
            std::vector<double> weights(n);
            double m = -1e300, l = 0;
            for (int p = 0; p < n; p++)
            {
                double dot = 0;
                for (int i = 0; i < keyDim; i++)
                    dot += (double)queries[((size_t)t * heads + h) * keyDim + i] * keys[(size_t)p * keyWidth + kvHead * keyDim + i];
                weights[p] = dot * scale;
                m = std::max(m, weights[p]);
            }
            for (int p = 0; p < n; p++) l += weights[p] = std::exp(weights[p] - m);
            for (int i = 0; i < valueDim; i++)
            {
                double expected = 0;
                for (int p = 0; p < n; p++) expected += weights[p] * values[(size_t)p * valueStride + kvHead * valueDim + i];
                expected /= l;
                double actual = output[((size_t)t * heads + h) * valueDim + i];
                difference += (actual - expected) * (actual - expected);
                norm += expected * expected;
            }
        }
    return std::sqrt(difference / norm);
}

// attention_decode_grouped (shape indices 7-12) for grouped shapes (groups of 1 to 8, rows of 64 to 128 floats, lanes past a 100-wide row
// idle): single tokens and batches of 3, lengths 1 to 2,100, with chunks of one pass (32 keys, the default), chunks
// smaller than a pass (8 keys) and chunks of many passes (the merge bound at 4 KiB), the position given directly and
// through a step pointer. The host side mirrors CudaBackend.GroupedDecodeAttentionBatch.
static int check_grouped(std::mt19937& random, int only_shape)
{
    struct Shape { int heads, kvHeads, dim; };
    const Shape shapes[] = { {12, 2, 128}, {28, 4, 128}, {32, 8, 128}, {8, 8, 64}, {16, 2, 64}, {4, 1, 100} };
    const int lengths[] = {1, 2, 33, 65, 700, 2100};
    const int multiprocessors = 132, capacity = 2200;
    std::normal_distribution<float> normal(0.f, 1.f);
    int failures = 0;
    for (int index = 0; index < 6; index++)
    {
        if (only_shape >= 0 && index != only_shape) continue;
        const Shape& s = shapes[index];
        int width = s.kvHeads * s.dim, group = s.heads / s.kvHeads;
        std::vector<float> keys((size_t)capacity * width), values((size_t)capacity * width);
        for (float& v : keys) v = 2.f * normal(random);
        for (float& v : values) v = normal(random);
        double worst = 0;
        for (int tokens : {1, 3})
            for (int length : lengths)
                for (auto [chunkKeys, mergeBytes] : {std::pair{32, 128L * 1024}, std::pair{8, 128L * 1024}, std::pair{32, 4L * 1024}})
                {
                    if (length < 33 && chunkKeys != 32) continue;
                    // CudaBackend.GroupedDecodeSplits.
                    long blocksPerChunk = (long)s.kvHeads * tokens;
                    long mergeLimit = std::max(1L, mergeBytes / ((long)group * s.dim * 4));
                    int splits = (int)std::min(std::clamp(multiprocessors / blocksPerChunk, 1L, 256L), mergeLimit);
                    std::vector<float> queries((size_t)tokens * s.heads * s.dim), output((size_t)tokens * s.heads * s.dim, NAN);
                    for (float& v : queries) v = normal(random);
                    long slots = (long)tokens * s.heads * splits;
                    std::vector<float> partials(slots * s.dim + 2 * slots, NAN);
                    std::vector<unsigned> counters((size_t)tokens * s.kvHeads, 0);
                    int position = length - 1, stepValue = 5;
                    const int* step = length % 2 ? &stepValue : nullptr;
                    int passed = step ? position - stepValue : position;
                    float scale = 1.f / std::sqrt((float)s.dim);
                    emu_launch({(unsigned)splits, (unsigned)s.kvHeads, (unsigned)tokens}, 256, [&] {
                        attention_decode_grouped(queries.data(), keys.data(), values.data(), partials.data(), counters.data(), output.data(),
                                                 s.heads, s.kvHeads, s.dim, width, width, scale * (float)M_LOG2E, step, passed, splits, chunkKeys);
                    });
                    for (unsigned c : counters)
                        if (c != 0) { printf("FAIL grouped %d/%d x %d tokens %d length %d: a merge counter left at %u\n", s.heads, s.kvHeads, s.dim, tokens, length, c); failures++; break; }
                    double error = reference_error(queries, keys.data(), width, values.data(), width, output, s.heads, s.kvHeads, s.dim, s.dim, tokens, position, scale);
                    if (!(error <= 1e-5))
                    {
                        printf("FAIL grouped %d/%d x %d tokens %d length %d chunk keys %d merge %ld: relative L2 %.3e\n", s.heads, s.kvHeads, s.dim, tokens, length, chunkKeys, mergeBytes, error);
                        failures++;
                    }
                    worst = std::max(worst, std::isnan(error) ? INFINITY : error);
                }
        printf("grouped %d/%d heads x %d: largest relative L2 %.2e\n", s.heads, s.kvHeads, s.dim, worst);
        fflush(stdout);
    }
    return failures;
}

// attention_decode_mla (shape indices 13-15) for MLA's latent cache (576-float key rows holding the 512-float value
// rows, one cache head; 16, 128 and 20 query heads, the last a partial head tile): single tokens and batches of 3,
// lengths 1 to 2,100, with chunks of one pass (16 keys, the default), of 4 keys and of many passes (the merge bound
// at 32 KiB: 2 chunks a head tile), the position given directly and through a step pointer, and a key stride wider
// than the row. The host side mirrors CudaBackend.MlaDecodeAttentionBatch.
static int check_mla(std::mt19937& random, int only_shape)
{
    const int headCounts[] = {16, 128, 20};
    const int lengths[] = {1, 2, 17, 33, 700, 2100};
    const int multiprocessors = 132, capacity = 2200, keyDim = 576, valueDim = 512, stride = 580;
    std::normal_distribution<float> normal(0.f, 1.f);
    std::vector<float> keys((size_t)capacity * stride);
    for (float& v : keys) v = normal(random);
    int failures = 0;
    for (int index = 0; index < 3; index++)
    {
        if (only_shape >= 0 && index != only_shape) continue;
        int heads = headCounts[index], tiles = (heads + 7) / 8;
        double worst = 0;
        for (int tokens : {1, 3})
            for (int length : lengths)
                for (auto [chunkKeys, mergeBytes] : {std::pair{16, 256L * 1024}, std::pair{4, 256L * 1024}, std::pair{16, 32L * 1024}})
                {
                    if (length < 17 && chunkKeys != 16) continue;
                    if (heads == 128 && length > 700 && tokens == 3) continue; // the emulation's slowest cases add nothing
                    // CudaBackend.MlaDecodeSplits.
                    long mergeLimit = std::max(1L, mergeBytes / (8L * valueDim * 4));
                    int splits = (int)std::min(std::clamp((long)multiprocessors / ((long)tiles * tokens), 1L, 256L), mergeLimit);
                    std::vector<float> queries((size_t)tokens * heads * keyDim), output((size_t)tokens * heads * valueDim, NAN);
                    for (float& v : queries) v = 0.1f * normal(random);
                    long slots = (long)tokens * heads * splits;
                    std::vector<float> partials(slots * valueDim + 2 * slots, NAN);
                    std::vector<unsigned> counters((size_t)tokens * tiles, 0);
                    int position = length - 1, stepValue = 5;
                    const int* step = length % 2 ? &stepValue : nullptr;
                    int passed = step ? position - stepValue : position;
                    float scale = 1.f / std::sqrt((float)keyDim);
                    emu_launch({(unsigned)splits, (unsigned)tiles, (unsigned)tokens}, 256, [&] {
                        attention_decode_mla(queries.data(), keys.data(), partials.data(), counters.data(), output.data(),
                                             heads, stride, scale * (float)M_LOG2E, step, passed, splits, chunkKeys);
                    });
                    for (unsigned c : counters)
                        if (c != 0) { printf("FAIL mla %d heads tokens %d length %d: a merge counter left at %u\n", heads, tokens, length, c); failures++; break; }
                    double error = reference_error(queries, keys.data(), stride, keys.data(), stride, output, heads, 1, keyDim, valueDim, tokens, position, scale);
                    if (!(error <= 1e-5))
                    {
                        printf("FAIL mla %d heads tokens %d length %d chunk keys %d merge %ld: relative L2 %.3e\n", heads, tokens, length, chunkKeys, mergeBytes, error);
                        failures++;
                    }
                    worst = std::max(worst, std::isnan(error) ? INFINITY : error);
                }
        printf("mla %d heads x 576/512: largest relative L2 %.2e\n", heads, worst);
        fflush(stdout);
    }
    return failures;
}

int main(int argc, char** argv)
{
    struct Shape { int heads, kvHeads, keyDim, valueDim; bool valuesInKeys; };
    const Shape shapes[] = { {12, 2, 128, 128, false}, {16, 1, 576, 512, true}, {128, 1, 576, 512, true},
                             {4, 4, 62, 62, false}, {18, 1, 64, 96, false}, {40, 1, 64, 256, false},
                             {64, 4, 64, 64, false} };
    const int lengths[] = {1, 2, 8, 9, 17, 31, 33, 65, 200, 700, 2100};
    const int multiprocessors = 132, capacity = 2200;
    int only = argc > 1 ? atoi(argv[1]) : -1;
    std::mt19937 random(7);
    if (only == -1 || only >= 13)
    {
        int mla = check_mla(random, only >= 13 ? only - 13 : -1);
        printf("attention_decode_mla: %d failures\n", mla);
        if (only >= 13) return mla != 0;
        if (mla != 0) return 1;
    }
    if (only == -1 || only >= 7)
    {
        int grouped = check_grouped(random, only >= 7 ? only - 7 : -1);
        printf("attention_decode_grouped: %d failures\n", grouped);
        if (only >= 7) return grouped != 0;
        if (grouped != 0) return 1;
    }
    std::normal_distribution<float> normal(0.f, 1.f);
    int failures = 0;
    for (int index = 0; index < 7; index++)
    {
        if (only >= 0 && index != only) continue;
        const Shape s = shapes[index];
        int keyWidth = s.kvHeads * s.keyDim, valueWidth = s.valuesInKeys ? keyWidth : s.kvHeads * s.valueDim;
        std::vector<float> keys((size_t)capacity * keyWidth), values(s.valuesInKeys ? 0 : (size_t)capacity * valueWidth);
        for (float& v : keys) v = 2.f * normal(random);
        for (float& v : values) v = normal(random);
        const float* valueRows = s.valuesInKeys ? keys.data() : values.data();
        int group = s.heads / s.kvHeads;
        int threads = s.valueDim <= 256 ? (s.valueDim + 31) / 32 * 32 : 256, dims = s.valueDim <= 256 ? 1 : 2, keysPerTile = s.valueDim <= 256 ? 32 : 16;
        double worst = 0;
        for (int tokens : {1, 3})
            for (int length : lengths)
            {
                // CudaBackend.DecodeTiling, DecodeThreads, DecodeSharedFloats.
                int headCapacity = group <= 4 ? 4 : group <= 8 ? 8 : 16, headTile, splits;
                long blocksPerChunk;
                while (true)
                {
                    headTile = std::min(group, headCapacity);
                    blocksPerChunk = (long)s.kvHeads * ((group + headTile - 1) / headTile) * tokens;
                    long mergeLimit = std::max(1L, 256L * 1024 / ((long)headTile * s.valueDim * 4));
                    splits = (int)std::min(std::clamp((2L * multiprocessors + blocksPerChunk - 1) / blocksPerChunk, 1L, 256L), mergeLimit);
                    if (headCapacity == 4 || splits * blocksPerChunk >= multiprocessors) break;
                    headCapacity /= 2;
                }
                int cacheHeadTiles = s.kvHeads * ((group + headTile - 1) / headTile);
                Kernel kernel = headCapacity == 4 ? (dims == 1 ? attention_decode_4_1_32 : attention_decode_4_2_16)
                              : headCapacity == 8 ? (dims == 1 ? attention_decode_8_1_32 : attention_decode_8_2_16)
                              : (dims == 1 ? attention_decode_16_1_32 : attention_decode_16_2_16);
                if (length == 1) printf("  %d tokens: kernel for %d heads, tiles of %d, %d chunks\n", tokens, headCapacity, headTile, splits);
                long sharedFloats = 5L * headCapacity + 2L * keysPerTile * headCapacity + 32L * (threads / 32) * headCapacity
                    + (long)s.keyDim * headCapacity + std::max((long)keysPerTile * (s.keyDim + 1), (long)headCapacity * splits)
                    + (s.valuesInKeys ? 0 : (long)keysPerTile * s.valueDim);
                if (sharedFloats * 4 > (long)sizeof(emu_dynamic_shared)) { printf("shape %d: %ld bytes of shared memory\n", index, sharedFloats * 4); return 1; }
                std::memset(emu_dynamic_shared, 0xFF, sharedFloats * 4); // NaNs: a value read before it is written shows
                std::vector<float> queries((size_t)tokens * s.heads * s.keyDim), output((size_t)tokens * s.heads * s.valueDim, NAN);
                for (float& v : queries) v = normal(random);
                long slots = (long)tokens * s.heads * splits;
                std::vector<double> partials((4 * ((slots * s.valueDim + 3) & ~3L) + 12 * slots + 7) / 8);
                std::vector<unsigned> counters((size_t)tokens * cacheHeadTiles, 0);
                int position = length - 1; // the first token's; token t attends to length + t positions
                int stepValue = 5;
                const int* step = length % 2 ? &stepValue : nullptr; // odd lengths: as a replayed step reads it
                int passed = step ? position - stepValue : position;
                float scale = 1.f / std::sqrt((float)s.keyDim);
                emu_launch({(unsigned)splits, (unsigned)cacheHeadTiles, (unsigned)tokens}, threads, [&] {
                    kernel(queries.data(), keys.data(), valueRows, (char*)partials.data(), counters.data(), output.data(), s.heads, s.kvHeads,
                           s.keyDim, s.valueDim, keyWidth, valueWidth, scale, step, passed, splits, headTile, s.valuesInKeys ? 1 : 0);
                });
                for (unsigned c : counters)
                    if (c != 0) { printf("FAIL shape %d tokens %d length %d: a merge counter left at %u\n", index, tokens, length, c); failures++; break; }
                double difference = 0, norm = 0;
                for (int t = 0; t < tokens; t++)
                    for (int h = 0; h < s.heads; h++)
                    {
                        int kvHead = h / group, n = position + t + 1;
                        std::vector<double> weights(n);
                        double m = -1e300, l = 0;
                        for (int p = 0; p < n; p++)
                        {
                            double dot = 0;
                            for (int i = 0; i < s.keyDim; i++)
                                dot += (double)queries[((size_t)t * s.heads + h) * s.keyDim + i] * keys[(size_t)p * keyWidth + kvHead * s.keyDim + i];
                            weights[p] = dot * scale;
                            m = std::max(m, weights[p]);
                        }
                        for (int p = 0; p < n; p++) l += weights[p] = std::exp(weights[p] - m);
                        for (int i = 0; i < s.valueDim; i++)
                        {
                            double expected = 0;
                            for (int p = 0; p < n; p++)
                                expected += weights[p] * (s.valuesInKeys ? keys[(size_t)p * keyWidth + i] : values[(size_t)p * valueWidth + kvHead * s.valueDim + i]);
                            expected /= l;
                            double actual = output[((size_t)t * s.heads + h) * s.valueDim + i];
                            difference += (actual - expected) * (actual - expected);
                            norm += expected * expected;
                        }
                    }
                double error = std::sqrt(difference / norm);
                if (!(error <= 1e-5)) { printf("FAIL shape %d tokens %d length %d: relative L2 %.3e\n", index, tokens, length, error); failures++; }
                worst = std::max(worst, std::isnan(error) ? INFINITY : error);
            }
        printf("%d/%d heads x %d/%d: largest relative L2 %.2e\n", s.heads, s.kvHeads, s.keyDim, s.valueDim, worst);
        fflush(stdout);
    }
    printf("attention_decode: %d failures\n", failures);
    return failures != 0;
}
