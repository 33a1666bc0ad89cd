namespace Fathom.Runtime;

/// <summary>
/// A prompt batch's routed experts one expert at a time, with the tokens grouped on the host: what
/// <see cref="IComputeBackend.AddRoutedExperts"/> does by default, and what a backend falls back to when it cannot
/// group on its device.
/// </summary>
public static class ExpertBatch
{
    /// <summary>
    /// The working space <see cref="AddByExpert"/> needs per token: two rows of the input's width, two of the experts'
    /// width, and one row of the input's width per chosen expert (the token's slots).
    /// </summary>
    public static long WorkLength(int tokens, int width, int expertWidth, int used) => (long)tokens * (2L * width + 2L * expertWidth + (long)used * width);

    /// <summary>
    /// Reads the chosen ids on the host (<see cref="IComputeBackend.ReadToHost"/>), then for each expert in increasing
    /// id with at least one token: gathers its tokens' input rows, multiplies them by its gate and up, applies
    /// SiLU(gate) × up, multiplies by its down and copies each output row into its token's slot (the expert's place in
    /// the token's choice, <see cref="IComputeBackend.AddScaledRows"/> into zeroed slots). Then each token's slots are
    /// weighted, summed in slot order and added to its residual row (<see cref="IComputeBackend.AddWeightedRows"/>).
    /// </summary>
    public static void AddByExpert(IComputeBackend backend, ReadOnlySpan<WeightMatrix> gate, ReadOnlySpan<WeightMatrix> up, ReadOnlySpan<WeightMatrix> down,
        ReadOnlySpan<float> ids, ReadOnlySpan<float> weights, int used, ReadOnlySpan<float> inputs, Span<float> residual, int tokens, Span<float> work)
    {
        if (tokens <= 0) return;
        int experts = gate.Length, width = gate[0].Columns, expertWidth = gate[0].Rows;
        Validate(gate, up, down, ids, weights, used, inputs, residual, tokens, work);
        Span<float> chosen = System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(ids), tokens * used);
        backend.ReadToHost(chosen);

        // Working rows (in `work`, so a device backend finds them where the caller's scratch lives).
        Span<float> batch = work[..(tokens * width)];
        Span<float> output = work.Slice(tokens * width, tokens * width);
        Span<float> gates = work.Slice(2 * tokens * width, tokens * expertWidth);
        Span<float> ups = work.Slice(2 * tokens * width + tokens * expertWidth, tokens * expertWidth);
        Span<float> slots = work.Slice(2 * tokens * (width + expertWidth), tokens * used * width);
        slots.Clear();
        backend.WrittenOnHost(slots);
        int[] rentedMembers = System.Buffers.ArrayPool<int>.Shared.Rent(tokens);
        int[] rentedSlots = System.Buffers.ArrayPool<int>.Shared.Rent(tokens);
        float[] ones = System.Buffers.ArrayPool<float>.Shared.Rent(tokens);
        Span<int> members = rentedMembers.AsSpan(0, tokens), memberSlots = rentedSlots.AsSpan(0, tokens);
        ones.AsSpan(0, tokens).Fill(1f);
        try
        {
            for (int e = 0; e < experts; e++)
            {
                int m = 0;
                for (int t = 0; t < tokens; t++)
                    for (int k = 0; k < used; k++)
                        if ((int)chosen[t * used + k] == e)
                        {
                            members[m] = t;
                            memberSlots[m] = t * used + k;
                            m++;
                        }
                if (m == 0) continue;
                backend.GatherRows(inputs, members[..m], batch, width);
                backend.MatMul(gate[e], batch, gates, m);
                backend.MatMul(up[e], batch, ups, m);
                backend.SiluMul(gates[..(m * expertWidth)], ups);
                backend.MatMul(down[e], gates, output, m);
                // Into the (zeroed) slots: 0 + 1 · output is the output itself.
                backend.AddScaledRows(slots, output, memberSlots[..m], ones.AsSpan(0, m), width);
            }
            for (int t = 0; t < tokens; t++)
                backend.AddWeightedRows(residual.Slice(t * width, width), slots.Slice(t * used * width, used * width), weights.Slice(t * used, used), width);
        }
        finally
        {
            System.Buffers.ArrayPool<int>.Shared.Return(rentedMembers);
            System.Buffers.ArrayPool<int>.Shared.Return(rentedSlots);
            System.Buffers.ArrayPool<float>.Shared.Return(ones);
        }
    }

    /// <summary>Throws unless the three expert lists, the choices, the rows and the working space fit together.</summary>
    public static void Validate(ReadOnlySpan<WeightMatrix> gate, ReadOnlySpan<WeightMatrix> up, ReadOnlySpan<WeightMatrix> down,
        ReadOnlySpan<float> ids, ReadOnlySpan<float> weights, int used, ReadOnlySpan<float> inputs, ReadOnlySpan<float> residual, int tokens, ReadOnlySpan<float> work)
    {
        if (gate.IsEmpty || gate.Length != up.Length || gate.Length != down.Length)
            throw new ArgumentException($"{gate.Length} gates, {up.Length} ups and {down.Length} downs: one of each per expert");
        if (gate[0] is null || up[0] is null || down[0] is null) throw new ArgumentNullException(nameof(gate), "expert 0's matrices must be given");
        int width = gate[0].Columns, expertWidth = gate[0].Rows;
        if (up[0].Columns != width || up[0].Rows != expertWidth || down[0].Columns != expertWidth || down[0].Rows != width)
            throw new ArgumentException($"experts of {gate[0].Name} ({expertWidth}×{width}), {up[0].Name} and {down[0].Name} do not chain");
        if (used <= 0 || used > gate.Length) throw new ArgumentOutOfRangeException(nameof(used), $"{used} of {gate.Length} experts per token");
        long pairs = (long)tokens * used;
        if (ids.Length < pairs || weights.Length < pairs) throw new ArgumentException($"{tokens} tokens of {used} experts need {pairs} ids and weights");
        if (inputs.Length < (long)tokens * width || residual.Length < (long)tokens * width)
            throw new ArgumentException($"{tokens} rows of {width} need {(long)tokens * width} input and residual values");
        if (work.Length < WorkLength(tokens, width, expertWidth, used))
            throw new ArgumentException($"the routed experts of {tokens} tokens need {WorkLength(tokens, width, expertWidth, used)} working values, not {work.Length}");
    }
}
