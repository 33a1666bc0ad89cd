// Kernels/attention_decode.cu run on the CPU (emulation.h) against a double-precision softmax attention, for the seven
// shapes of DecodeAttentionTests: single tokens and batches of 3, lengths 1 to 2,100 (one chunk, chunks of 8 to 16
// keys, several key tiles per chunk, the chunk count at its merge limit), the position given directly and through a step pointer (as in a replayed
// decode step). Each case must be within 1e-5 relative L2 (the GPU tests' tolerance) and leave every merge counter at
// zero. Usage: attention_decode_check [shape index]. The host side mirrors CudaBackend.DecodeAttentionBatch.
#include "emulation.h"
#include "common.cuh"
__device__ __forceinline__ float exp_rounded(float x) { return (float)exp((double)x); } // as ops.cu
__device__ __forceinline__ int step_position(const int* step, int first_position) { return step ? first_position + *step : first_position; }
#include "attention_decode_emulated.cu"
#include <random>

typedef void (*Kernel)(const float*, const float*, const float*, char*, unsigned*, float*, int, int, int, int, int, int, float,
                       const int*, int, int, int, int);

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
