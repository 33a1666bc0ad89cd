// The L2 prefetch the one-token products issue before waiting for the previous kernel (Kernels/matvec_q.cu,
// matvec_q_prefetch, with programmatic launches), run on the CPU (emulation.h) with every prefetched line recorded:
// for every layout (lanes a power of two from the type's pieces per block to 128, 1, 2 or 4 rows per thread) and
// row counts that fill the last block or not, each block asks for exactly the 128-byte lines of the rows its threads
// read (the kernel's own first_row formula; up to MATVEC_Q_PREFETCH_BYTES from the first) and nothing else; a grouped launch without routing ids asks for its
// matrix's rows, and one with ids (chosen by the previous kernel) or with a matrix index past the table asks for none.
#include <map>
#include <mutex>
#include <set>
static std::mutex emu_prefetch_lock;
static std::set<unsigned long long> emu_prefetched;
static std::map<unsigned long long, int> emu_prefetch_count;
#define FATHOM_PREFETCH_L2_LINE(address) emu_prefetch_line(address)
static void emu_prefetch_line(unsigned long long line)
{
    std::lock_guard<std::mutex> hold(emu_prefetch_lock);
    emu_prefetched.insert(line);
    emu_prefetch_count[line]++;
}
#include "emulation.h"
#include "common.cuh"
// matvec_q.cu from its layout constants to its prefetch helpers (run.sh cuts them out: the products themselves use
// PTX that C++ cannot compile, and do not run here).
#include "matvec_q_prefetch.cu"

static int failures = 0;
#define CHECK(condition, ...) do { if (!(condition)) { failures++; if (failures <= 20) { std::printf(__VA_ARGS__); std::printf("\n"); } } } while (0)

// The lines of [start, start + bytes).
static std::set<unsigned long long> Lines(unsigned long long start, long long bytes)
{
    std::set<unsigned long long> lines;
    for (unsigned long long line = start & ~127ull; bytes > 0 && line < start + (unsigned long long)bytes; line += 128) lines.insert(line);
    return lines;
}

// One block's prefetch, as the kernel's first statement issues it, on MATVEC_Q_THREADS threads.
static void Block(dim3 block, const std::function<void()>& prefetch)
{
    emu_prefetched.clear();
    emu_prefetch_count.clear();
    gridDim = {block.x + 1, 1, block.z + 1};
    blockDim = {MATVEC_Q_THREADS, 1, 1};
    for (unsigned t = 0; t < MATVEC_Q_THREADS; t++)
    {
        threadIdx = {t, 0, 0};
        blockIdx = block;
        prefetch();
    }
}

int main()
{
    int checked = 0;
    // A weight matrix's base as the device gives it (aligned) and one shifted by a row of Q4_0's odd bytes.
    for (unsigned long long base : {0x7f0000000000ull, 0x7f0000000012ull})
        for (int parts : {4, 8, 16}) // Q4_0/Q8_0, the K types and IQ types, Q6_K
            for (int lanes = parts; lanes <= MATVEC_Q_THREADS; lanes *= 2)
                for (int rows_per_thread : {1, 2, 4})
                    for (long long row_bytes : {18ll, 144ll, 864ll, 5040ll})
                        for (int rows : {1, 7, 96, 1000})
                        {
                            int per_block = (MATVEC_Q_THREADS / lanes) * rows_per_thread;
                            unsigned blocks = (unsigned)((rows + per_block - 1) / per_block);
                            for (unsigned b = 0; b < blocks; b++)
                            {
                                Block({b, 0, 0}, [&] { matvec_q_prefetch((const u8*)base, row_bytes, rows, lanes, rows_per_thread, (int)b); });
                                // The rows the block's threads read: first_row .. first_row + rows_per_thread - 1 of each thread.
                                int lowest = rows, highest = -1;
                                for (int t = 0; t < MATVEC_Q_THREADS; t++)
                                {
                                    int first_row = ((int)b * (MATVEC_Q_THREADS / lanes) + t / lanes) * rows_per_thread;
                                    for (int k = 0; k < rows_per_thread; k++)
                                        if (first_row + k < rows) { lowest = std::min(lowest, first_row + k); highest = std::max(highest, first_row + k); }
                                }
                                std::set<unsigned long long> expected = Lines(base + (unsigned long long)(lowest * row_bytes), std::min((long long)(highest - lowest + 1) * row_bytes, (long long)MATVEC_Q_PREFETCH_BYTES));
                                CHECK(emu_prefetched == expected, "base %llx lanes %d rows/thread %d row bytes %lld rows %d block %u: %zu lines, expected %zu",
                                      base, lanes, rows_per_thread, row_bytes, rows, b, emu_prefetched.size(), expected.size());
                                for (auto& [line, count] : emu_prefetch_count) CHECK(count == 1, "line %llx prefetched %d times", line, count);
                                checked++;
                            }
                        }

    // Grouped: a table of 3 matrices in 2 sets; per_set 3 (each matrix of the set) or 4 (one entry past the table).
    unsigned long long table[6];
    for (int i = 0; i < 6; i++) table[i] = 0x7e0000000000ull + (unsigned long long)i * 0x100000;
    float ids[4] = {2, 0, 1, 2};
    const int lanes = 32, rows_per_thread = 2, rows = 40;
    const long long row_bytes = 144;
    for (int per_set : {3, 4})
        for (unsigned z = 0; z < (unsigned)(2 * per_set); z++)
            for (unsigned b = 0; b < 3; b++)
            {
                Block({b, 0, z}, [&] { matvec_q_prefetch(group_matrix_before_wait(table, 0, 3, per_set), row_bytes, rows, lanes, rows_per_thread, (int)b); });
                int set = (int)z / per_set, entry = (int)z % per_set, per_block = (MATVEC_Q_THREADS / lanes) * rows_per_thread;
                std::set<unsigned long long> expected;
                if (entry < 3)
                    expected = Lines(table[set * 3 + entry] + (unsigned long long)(b * per_block * row_bytes), std::min((long long)std::min(per_block, rows - (int)b * per_block) * row_bytes, (long long)MATVEC_Q_PREFETCH_BYTES));
                CHECK(emu_prefetched == expected, "group without ids: per_set %d z %u block %u: %zu lines, expected %zu", per_set, z, b, emu_prefetched.size(), expected.size());
                Block({b, 0, z}, [&] { matvec_q_prefetch(group_matrix_before_wait(table, ids, 3, per_set), row_bytes, rows, lanes, rows_per_thread, (int)b); });
                CHECK(emu_prefetched.empty(), "group with ids: per_set %d z %u block %u prefetched %zu lines", per_set, z, b, emu_prefetched.size());
                checked += 2;
            }

    std::printf("prefetch: %d blocks checked, %d failures\n", checked, failures);
    return failures == 0 ? 0 : 1;
}
