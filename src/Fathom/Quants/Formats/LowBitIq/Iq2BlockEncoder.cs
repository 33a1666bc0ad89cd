using System.Buffers.Binary;

namespace Fathom.Quants.Formats.LowBitIq;

/// <summary>
/// What differs between the IQ2 encoders (ggml's quantize_row_iq2_{xxs,xs,s}_impl) around the shared lattice search:
/// group size, grid, search settings, a few constants, and where a group's grid entries, signs and scale are stored.
/// Implemented by empty structs, one per format, so <see cref="Iq2BlockEncoder{TLayout}"/> is specialized for each.
/// </summary>
internal interface IIq2BlockLayout
{
    /// <summary>Values per group with its own 4-bit scale: 32 (IQ2_XXS) or 16.</summary>
    static abstract int GroupSize { get; }

    static abstract int BlockBytes { get; }

    static abstract IqGridIndex Grid { get; }

    static abstract Iq2LatticeQuantizer.Search Search { get; }

    /// <summary>The weighting's σ² is this times the super-block's mean x² (2 for IQ2_S, else 1).</summary>
    static abstract float Sigma2Factor { get; }

    /// <summary>Whether the sign patterns have even parity (7 stored bits per 8 values), as in IQ2_XXS and IQ2_XS.</summary>
    static abstract bool EvenParity { get; }

    /// <summary>A group whose largest magnitude is below this encodes as zeros.</summary>
    static abstract float ZeroGroupThreshold { get; }

    /// <summary>d is stored as (largest group scale / 31) times this (IQ2_S: 0.9875), the codes use the unadjusted d.</summary>
    static abstract float StoredScaleFactor { get; }

    /// <summary>Writes group <paramref name="group"/>'s grid entries and sign patterns (one per 8 values) into the cleared block.</summary>
    static abstract void StoreGroup(Span<byte> block, int group, ReadOnlySpan<int> entries, ReadOnlySpan<byte> signs);

    /// <summary>Stores group <paramref name="group"/>'s 4-bit scale code.</summary>
    static abstract void StoreScale(Span<byte> block, int group, int code);
}

/// <summary>The super-block loop every IQ2 encoder shares: per group weights, signs, lattice search; then d and the scale codes.</summary>
internal static class Iq2BlockEncoder<TLayout> where TLayout : struct, IIq2BlockLayout
{
    public static void Quantize(GgmlType type, ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Quantize(GgmlTypes.Layout(type), values, blocks.Length, importance);
        int groupSize = TLayout.GroupSize, groups = 256 / groupSize, runs = groupSize / 8;
        Span<float> weight = stackalloc float[groupSize], waux = stackalloc float[groupSize], xval = stackalloc float[groupSize];
        Span<float> scales = stackalloc float[groups];
        Span<sbyte> levels = stackalloc sbyte[groupSize], trial = stackalloc sbyte[groupSize];
        Span<int> entries = stackalloc int[runs];
        Span<byte> signs = stackalloc byte[runs];
        for (int ibl = 0; ibl < nb; ibl++)
        {
            ReadOnlySpan<float> x = values.Slice(256 * ibl, 256);
            ReadOnlySpan<float> qw = importance.IsEmpty ? default : importance.Slice(256 * ibl, 256);
            Span<byte> y = blocks.Slice(TLayout.BlockBytes * ibl, TLayout.BlockBytes);
            y.Clear();
            float sigma2 = 0;
            foreach (float v in x) sigma2 += v * v;
            sigma2 = TLayout.Sigma2Factor * sigma2 / 256;
            float maxScale = 0;
            for (int ib = 0; ib < groups; ib++)
            {
                ReadOnlySpan<float> xb = x.Slice(groupSize * ib, groupSize);
                Iq2LatticeQuantizer.Weights(xb, qw.IsEmpty ? default : qw.Slice(groupSize * ib, groupSize), sigma2, 0.25f, weight);
                for (int i = 0; i < groupSize; i++) waux[i] = MathF.Sqrt(weight[i]);
                Iq2LatticeQuantizer.SplitSigns(xb, weight, xval, signs, TLayout.EvenParity);
                float max = 0;
                foreach (float v in xval) max = MathF.Max(max, v);
                if (max < TLayout.ZeroGroupThreshold)
                {
                    scales[ib] = 0;
                    continue;
                }
                float scale = Iq2LatticeQuantizer.QuantizeGroup(TLayout.Grid, TLayout.Search, xval, weight, waux, entries, levels, trial);
                if (scale < 0)
                {
                    scale = -scale;
                    for (int k = 0; k < runs; k++) signs[k] = (byte)~signs[k];
                }
                TLayout.StoreGroup(y, ib, entries, signs);
                scales[ib] = scale;
                maxScale = MathF.Max(maxScale, scale);
            }
            if (maxScale == 0)
            {
                y.Clear();
                continue;
            }
            float d = maxScale / 31;
            BinaryPrimitives.WriteUInt16LittleEndian(y, Fp16.FromSingle(d * TLayout.StoredScaleFactor));
            float id = 1 / d;
            for (int ib = 0; ib < groups; ib++) TLayout.StoreScale(y, ib, Iq2LatticeQuantizer.ScaleCode(scales[ib], id, 15));
        }
    }
}
