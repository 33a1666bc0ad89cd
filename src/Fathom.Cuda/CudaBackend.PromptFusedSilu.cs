using Fathom.Cuda.Blas;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;

namespace Fathom.Cuda;

/// <summary>
/// A prompt's SiLU·gate writing the down product's halves as well (Kernels/prompt_products.cu's silu_mul_halves_q8_k /
/// _q8_0): the product right after would otherwise read the SiLU's output back to round it to its F16 hi and lo
/// (round_halves_*). The backend does not know the next product when it queues the SiLU, so, as decode's fused packing
/// does (<see cref="FusedPackingFor"/>), it remembers per SiLU output the rounding the product right after made of it last
/// time and makes it in the SiLU from then on; the product finds the halves through <see cref="_lastHalves"/>. A wrong
/// guess costs the extra stores only: the product checks source, count, format and split, rounds for itself when they
/// differ, and the guess is corrected.
/// </summary>
public sealed partial class CudaBackend
{
    /// <summary>
    /// Whether a prompt's SiLU·gate writes the rounded halves of the product that reads its output (on with
    /// <see cref="PromptFusedKernels"/> unless FATHOM_CUDA_PROMPT_FUSED2=0, which keeps silu_mul then round_halves_*;
    /// the same bits either way). No settings bit: it acts only on what a prompt's product taught it (a batch of at least
    /// <see cref="BlasMinimumTokens"/> rows, so never on a one-token step's SiLU, whose count differs).
    /// </summary>
    public bool PromptFusedSilu { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_PROMPT_FUSED2") != "0";

    /// <summary>SiLUs queued with the next product's halves fused in, so far.</summary>
    public long FusedSiluHalves { get; private set; }

    // Per SiLU output (address and value count: V3's dense and shared-expert SiLUs may share a buffer at two widths): the
    // activation format and split of the halves the product right after made of it.
    private readonly Dictionary<(ulong Output, long Count), (GgmlType Format, bool Split, int Row)> _halvesAfterSilu = [];
    // The last SiLU whose output the next product may round to halves: its output, value count and op.
    private (ulong Output, long Count, long Op) _lastSilu;

    /// <summary>
    /// Queues <c>gate = silu(gate) · up</c> over <paramref name="n"/> values with the halves learned for
    /// <paramref name="gate"/> when <see cref="PromptFusedSilu"/> applies; false leaves the SiLU to <see cref="LaunchSiluMul"/>.
    /// </summary>
    private bool SiluMulToHalves(ulong gate, ulong up, long n, bool staged)
    {
        // A staging buffer holds other data next time; the kernels read 16-byte vectors.
        _lastSilu = staged ? default : (gate, n, _ops);
        if (staged || !PromptFusedKernels || !PromptFusedSilu || ((gate | up) & 15) != 0
            || !_halvesAfterSilu.TryGetValue((gate, n), out var learned))
            return false;
        bool q8_k = learned.Format == GgmlType.Q8_K;
        DeviceBuffer halves = HalfActivationScratch.Get((learned.Split ? 2 : 1) * n * sizeof(ushort));
        ulong hi = halves.Pointer, lo = learned.Split ? SecondHalves(hi, learned.Row, n) : 0;
        KernelArguments arguments = new KernelArguments().Pointer(gate).Pointer(up).Pointer(hi).Pointer(lo).Int(learned.Row / (q8_k ? 8 : 4));
        if (q8_k)
            arguments.Long(n / 256).Launch(_context, _kernels.Function("silu_mul_halves_q8_k"), "silu_mul_halves_q8_k",
                (uint)((n / 256 + 7) / 8), 1, PromptFusedThreads);
        else
            arguments.Long(n / 4).Launch(_context, _kernels.Function("silu_mul_halves_q8_0"), "silu_mul_halves_q8_0",
                Blocks(n / 4, PromptFusedThreads), 1, PromptFusedThreads);
        // Reusable by the next op only (HalfActivations checks Op == _ops - 1), as if the product had made them.
        _lastHalves = (gate, n, learned.Format, HalfType.F16, learned.Split, _ops, hi, learned.Row);
        FusedSiluHalves++;
        return true;
    }

    /// <summary>
    /// A product rounds <paramref name="count"/> values at <paramref name="x"/> to F16 halves itself: when they are the
    /// output of the SiLU just before, that SiLU writes them next time (or stops guessing when the ranges differ or the
    /// format has no fused kernel).
    /// </summary>
    private void LearnHalvesAfterSilu(ulong x, long count, GgmlType format, bool split, int row)
    {
        if (_lastSilu.Op != _ops - 1 || _lastSilu.Output != x) return;
        bool fusable = format switch
        {
            GgmlType.Q8_K => count % 256 == 0,
            // Q8_1 holds the same values as Q8_0 (as RoundToHalves).
            GgmlType.Q8_0 or GgmlType.Q8_1 => count % 32 == 0,
            _ => false,
        };
        if (fusable && _lastSilu.Count == count) _halvesAfterSilu[(x, count)] = (format, split, row);
        else _halvesAfterSilu.Remove((x, _lastSilu.Count));
    }

    /// <summary>An attach between the SiLU and its product (a model's first use of a buffer) does not change which product reads the SiLU's output.</summary>
    private void KeepSiluAcrossAttach()
    {
        if (_lastSilu.Op == _ops - 1) _lastSilu.Op = _ops;
    }
}
