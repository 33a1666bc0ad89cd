using System.Runtime.InteropServices;
using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Placement;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// Hybrid placement: weights a <see cref="PlacementPlan"/> keeps on the CPU are never uploaded; the products that read
/// them run on a <see cref="CpuBackend"/> over host copies of their inputs (read back from the GPU), and their outputs
/// are uploaded again. Everything else (norms, RoPE, attention over the KV cache, routing, the other products) stays on
/// the GPU. In a product group that mixes both (a decoded token's experts with the shared expert), the GPU's products
/// are queued first and run while the CPU computes its own.
/// </summary>
public sealed unsafe partial class CudaBackend : IWeightPlacement
{
    private CpuBackend? _host;
    private float[] _hostProduct = [];
    private WeightMatrix[] _chosenExperts = []; // a MoE step's chosen experts when some are CPU-placed // a CPU-placed product before it is added to a residual on the GPU
    // A mixed group's CPU matrices, their packed inputs and outputs: grown to the largest group seen, reused.
    private WeightMatrix[] _hostWeights = [];
    private float[] _hostInputs = [], _hostOutputs = [];

    /// <summary>The placement to plan when a model is loaded; null keeps every weight on the GPU without a plan.</summary>
    public PlacementOptions? PlacementRequest { get; init; }

    /// <summary>Threads of the CPU products of a hybrid placement; 0 means one per logical processor.</summary>
    public int HostThreads { get; init; }

    /// <summary>Where the loaded model's weights are; null when no placement was asked for (all on the GPU).</summary>
    public PlacementPlan? Placement { get; private set; }

    /// <summary>Plans <see cref="PlacementRequest"/> for the model's tensors and the GPU memory free now.</summary>
    public void PlaceWeights(GgufFile file, ModelHyperparameters config)
    {
        if (PlacementRequest is null) return;
        _context.MakeCurrent();
        (long free, _) = _context.MemoryInfo();
        long backendBytes = DequantizedFloatsLimit * sizeof(float) + PrefillSplitReserveBytes(config, PlacementRequest.ContextSize);
        UsePlacement(PlacementPlanner.Plan(file, config, PlacementRequest, free, backendBytes, streamsCpuExperts: StreamsHostExperts));
    }

    /// <summary>Computes with <paramref name="plan"/> from now on: products of weights it puts on the CPU run there.</summary>
    public void UsePlacement(PlacementPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        Placement = plan;
        if (!plan.HasCpuWeights) return;
        _host ??= new CpuBackend(HostThreads);
        UseGraphs = false; // a host product waits for the GPU, which a recorded graph cannot
    }

    /// <summary>Whether <paramref name="weight"/>'s products run on the CPU.</summary>
    private bool OnHost(WeightMatrix weight) => _host is not null && Placement!.DeviceOf(weight.Name) == PlacementDevice.Cpu;

    private bool AnyOnHost(ReadOnlySpan<WeightMatrix> weights)
    {
        if (_host is null) return false;
        foreach (WeightMatrix w in weights)
            if (OnHost(w)) return true;
        return false;
    }

    private CpuBackend Host()
    {
        if (_retirement.Capturing) throw new InvalidOperationException("a product of a CPU-placed weight cannot run inside a recorded CUDA graph");
        _ops++; // any operation ends a run of products sharing one rounded input
        return _host!;
    }

    private static Span<float> Writable(ReadOnlySpan<float> values) => MemoryMarshal.CreateSpan(ref MemoryMarshal.GetReference(values), values.Length);

    private void HostMatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens)
    {
        long inputs = (long)tokens * weight.Columns, outputs = (long)tokens * weight.Rows;
        if (input.Length < inputs) throw new ArgumentException($"{weight.Name}: input holds {input.Length} values, {tokens}×{weight.Columns} needed");
        if (output.Length < outputs) throw new ArgumentException($"{weight.Name}: output holds {output.Length} values, {tokens}×{weight.Rows} needed");
        if (tokens <= 0) return;
        CpuBackend host = Host();
        using OperationProfiler.Scope? profile = _profiler?.Measure("MatMul on the CPU");
        ReadToHost(Writable(input[..(int)inputs]));
        host.MatMul(weight, input, output, tokens);
        WrittenOnHost(output[..(int)outputs]);
    }

    /// <summary>
    /// <see cref="Product"/> of a CPU-placed weight: the product on the CPU, then its bias or its addition to what the
    /// output held (a residual) on the GPU, through a host buffer kept for the purpose.
    /// </summary>
    private void HostProduct(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens, ReadOnlySpan<float> bias, bool accumulate)
    {
        if (!accumulate)
        {
            HostMatMul(weight, input, output, tokens);
            if (!bias.IsEmpty) AddBias(output[..(tokens * weight.Rows)], bias[..weight.Rows], tokens);
            return;
        }
        int n = checked(tokens * weight.Rows);
        if (_hostProduct.Length < n) _hostProduct = new float[n];
        Span<float> product = _hostProduct.AsSpan(0, n);
        HostMatMul(weight, input, product, tokens);
        if (!bias.IsEmpty) AddBias(product, bias[..weight.Rows], tokens);
        Add(output[..n], product);
    }

    /// <summary>
    /// Chosen experts of which some are CPU-placed: the ids read back, then the chosen matrices as one mixed group
    /// (<see cref="MatMulGroup(ReadOnlySpan{WeightMatrix}, ReadOnlySpan{float}, int, Span{float}, int)"/>).
    /// </summary>
    private void HostMatMulExperts(ReadOnlySpan<WeightMatrix> experts, ReadOnlySpan<float> ids, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
    {
        ReadToHost(Writable(ids));
        if (_chosenExperts.Length < ids.Length) _chosenExperts = new WeightMatrix[ids.Length];
        ExpertRouting.ChooseExperts(experts, ids, _chosenExperts);
        MatMulGroup(_chosenExperts.AsSpan(0, ids.Length), inputs, inputStride, outputs, outputStride);
    }

    /// <summary>A batched group (MLA's per-head products over several tokens) with CPU-placed matrices: one mixed group per token.</summary>
    private void HostMatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
        int tokens, int inputTokenStride, int outputTokenStride)
    {
        for (int t = 0; t < tokens; t++)
            MatMulGroup(weights, inputs[(t * inputTokenStride)..], inputStride, outputs[(t * outputTokenStride)..], outputStride);
    }

    private void HostEmbed(WeightMatrix table, ReadOnlySpan<int> tokens, Span<float> output)
    {
        long values = (long)tokens.Length * table.Columns;
        if (output.Length < values) throw new ArgumentException($"{table.Name}: output holds {output.Length} values, {tokens.Length}×{table.Columns} needed");
        IComputeBackend host = Host();
        using OperationProfiler.Scope? profile = _profiler?.Measure("Embed on the CPU");
        host.Embed(table, tokens, output); // checks the token ids
        WrittenOnHost(output[..(int)values]);
    }

    /// <summary>
    /// A transposed group (a fused <c>attn_kv_b</c>'s heads, all of one tensor) on the CPU: the outputs are read back
    /// too, because the values between their strided rows go up again with them.
    /// </summary>
    private void HostTransposedMatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
        int tokens, int inputTokenStride, int outputTokenStride)
    {
        IComputeBackend host = Host();
        using OperationProfiler.Scope? profile = _profiler?.Measure("TransposedMatMulGroup on the CPU");
        ReadToHost(Writable(inputs));
        ReadToHost(outputs);
        host.TransposedMatMulGroup(weights, inputs, inputStride, outputs, outputStride, tokens, inputTokenStride, outputTokenStride);
        WrittenOnHost(outputs);
    }

    /// <summary>
    /// One-token products as a group: on the device (<see cref="GroupProducts"/>), or, when some are placed on the CPU,
    /// the GPU's queued first and the CPU's computed meanwhile as one <see cref="CpuBackend.MatMulGroup"/>.
    /// </summary>
    public void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
    {
        if (AnyOnHost(weights))
        {
            MixedMatMulGroup(weights, inputs, inputStride, outputs, outputStride);
            return;
        }
        GroupProducts(weights, inputs, inputStride, outputs, outputStride, []); // CudaBackend.cs
    }

    private void MixedMatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
    {
        CpuBackend host = Host();
        using OperationProfiler.Scope? profile = _profiler?.Measure("MatMulGroup on the CPU and GPU");
        if (inputStride < 0 || outputStride < 0) throw new ArgumentOutOfRangeException(nameof(inputStride), "strides must not be negative");
        // The CPU matrices, the span of the inputs they read, and the widest input and output among them.
        int count = 0, widestIn = 0, widestOut = 0;
        long firstIn = long.MaxValue, endIn = 0;
        for (int i = 0; i < weights.Length; i++)
        {
            WeightMatrix w = weights[i];
            if ((long)i * inputStride + w.Columns > inputs.Length || (long)i * outputStride + w.Rows > outputs.Length)
                throw new ArgumentException($"{w.Name}: matrix {i} of the group reaches past its inputs ({inputs.Length}) or outputs ({outputs.Length})");
            if (!OnHost(w)) continue;
            if (_hostWeights.Length <= count) Array.Resize(ref _hostWeights, Math.Max(4, 2 * _hostWeights.Length));
            _hostWeights[count++] = w;
            widestIn = Math.Max(widestIn, w.Columns);
            widestOut = Math.Max(widestOut, w.Rows);
            firstIn = Math.Min(firstIn, (long)i * inputStride);
            endIn = Math.Max(endIn, (long)i * inputStride + w.Columns);
        }
        ReadToHost(Writable(inputs[(int)firstIn..(int)endIn]));

        // The GPU's products are queued now and run while the CPU computes.
        for (int i = 0; i < weights.Length; i++)
        {
            WeightMatrix w = weights[i];
            if (!OnHost(w)) MatMul(w, inputs.Slice(i * inputStride, w.Columns), outputs.Slice(i * outputStride, w.Rows), 1);
        }

        // The CPU's, packed at uniform strides (a shared input needs no packing).
        int packedIn = inputStride == 0 ? 0 : widestIn;
        if (inputStride != 0 && _hostInputs.Length < (long)count * widestIn) _hostInputs = new float[checked(count * widestIn)];
        if (_hostOutputs.Length < (long)count * widestOut) _hostOutputs = new float[checked(count * widestOut)];
        for (int i = 0, k = 0; i < weights.Length && inputStride != 0; i++)
            if (OnHost(weights[i])) inputs.Slice(i * inputStride, weights[i].Columns).CopyTo(_hostInputs.AsSpan(k++ * widestIn));
        ReadOnlySpan<float> hostIn = inputStride == 0 ? inputs : _hostInputs;
        host.MatMulGroup(_hostWeights.AsSpan(0, count), hostIn, packedIn, _hostOutputs, widestOut);

        // Each CPU output goes to its own slot, on the host and (when resident) on the GPU; one wait covers every copy.
        bool uploaded = false;
        for (int i = 0, k = 0; i < weights.Length; i++)
        {
            WeightMatrix w = weights[i];
            if (!OnHost(w)) continue;
            Span<float> slot = outputs.Slice(i * outputStride, w.Rows);
            _hostOutputs.AsSpan(k++ * widestOut, w.Rows).CopyTo(slot);
            if (!TryResident(slot, out ulong device)) continue;
            fixed (float* p = slot) _context.Driver.CopyToDevice(device, p, (long)w.Rows * sizeof(float), _context.Stream);
            uploaded = true;
        }
        if (uploaded) _context.Synchronize("copies of CPU products to the device");
        _hostWeights.AsSpan(0, count).Clear(); // the group's matrices are not kept alive by the backend
    }

    private void DisposePlacement() => _host?.Dispose();
}
