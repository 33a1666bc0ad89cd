using System.Runtime.CompilerServices;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// <see cref="IComputeBackend"/> on one NVIDIA GPU. Weights are uploaded once, on first use (<see cref="DeviceWeights"/>);
/// the attention caches are mirrored on the GPU and only new rows are copied (<see cref="DeviceKvMirror"/>). Every
/// operation runs on the GPU, but activations travel host → device → host per operation, because the interface
/// passes host spans: this is the correctness-first stage. Keeping activations on the GPU across a forward pass,
/// and capturing decode steps as CUDA graphs, are the next steps and need a device-resident activation interface.
/// All work is queued on one stream; each operation waits for its result before returning.
/// </summary>
public sealed unsafe class CudaBackend : IComputeBackend
{
    private const int NormThreads = 256, RopeThreads = 64, ElementThreads = 256, AttentionThreads = 128;

    private readonly CudaContext _context;
    private readonly CudaKernels _kernels;
    private readonly DeviceWeights _weights;
    private readonly DeviceScratch _input, _rounded, _output, _side, _angles, _scores;
    private readonly ConditionalWeakTable<KvLayerCache, DeviceKvMirror> _mirrors = [];
    // The mirrors again, so their device memory can be freed when their cache is collected or the backend disposed.
    private readonly List<(WeakReference<KvLayerCache> Cache, DeviceKvMirror Mirror)> _mirrorList = [];
    private float[] _cos = [], _sin = [];

    /// <param name="device">The GPU's ordinal.</param>
    /// <param name="cache">Where compiled kernels are cached; null means <see cref="KernelCache.Default"/>.</param>
    public CudaBackend(int device = 0, KernelCache? cache = null)
    {
        _context = new CudaContext(device);
        try
        {
            _kernels = new CudaKernels(_context, cache);
        }
        catch
        {
            _context.Dispose();
            throw;
        }
        _weights = new DeviceWeights(_context);
        _input = new DeviceScratch(_context);
        _rounded = new DeviceScratch(_context);
        _output = new DeviceScratch(_context);
        _side = new DeviceScratch(_context);
        _angles = new DeviceScratch(_context);
        _scores = new DeviceScratch(_context);
    }

    /// <summary>One host thread drives the GPU.</summary>
    public int Threads => 1;

    public CudaDeviceInfo Device => _context.Device;

    /// <summary>How the kernels were obtained (cache hit or fresh compile, and for which target).</summary>
    public ModuleOrigin KernelOrigin => _kernels.Origin;

    /// <summary>Bytes of weights uploaded so far.</summary>
    public long WeightBytes => _weights.Bytes;

    public void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens)
    {
        int n = weight.Columns, rows = weight.Rows;
        if (input.Length < (long)tokens * n) throw new ArgumentException($"{weight.Name}: input holds {input.Length} values, {tokens}×{n} needed");
        if (output.Length < (long)tokens * rows) throw new ArgumentException($"{weight.Name}: output holds {output.Length} values, {tokens}×{rows} needed");
        if (!CudaKernels.Supports(weight.Format.Type))
            throw new NotSupportedException($"{weight.Name}: weight type {weight.Format.Type} has no CUDA kernel");
        _context.MakeCurrent();
        DeviceBuffer w = _weights.Get(weight);
        DeviceBuffer x = _input.Get((long)tokens * n * sizeof(float));
        DeviceBuffer y = _output.Get((long)tokens * rows * sizeof(float));
        x.Upload(input[..(tokens * n)]);
        x = RoundActivations(weight.Format.DotActivationType, x, (long)tokens * n);
        new KernelArguments().Pointer(w.Pointer).Long(weight.RowBytes).Pointer(x.Pointer).Pointer(y.Pointer).Int(rows).Int(n).Int(tokens)
            .Launch(_context, _kernels.MatMul(weight.Format.Type), weight.Name,
                (uint)((rows + CudaKernels.MatMulWarps - 1) / CudaKernels.MatMulWarps),
                (uint)((tokens + CudaKernels.TokenTile - 1) / CudaKernels.TokenTile), CudaKernels.MatMulWarps * 32);
        y.Download(output[..(tokens * rows)]);
    }

    /// <summary>
    /// The activations as the CPU engine multiplies them: rounded to the weight type's partner format (F16, BF16,
    /// Q8_0/Q8_1 or Q8_K values), so both engines compute the same products. F32 weights take them as they are.
    /// </summary>
    private DeviceBuffer RoundActivations(Quants.GgmlType activationType, DeviceBuffer x, long count)
    {
        if (_kernels.RoundActivations(activationType) is not { } rounding) return x;
        (IntPtr function, int perThread) = rounding;
        DeviceBuffer rounded = _rounded.Get(count * sizeof(float));
        long threads = count / perThread; // rows are whole blocks of the activation format, as the weight rows are
        new KernelArguments().Pointer(x.Pointer).Pointer(rounded.Pointer).Long(threads)
            .Launch(_context, function, $"round_activations({activationType})", (uint)((threads + ElementThreads - 1) / ElementThreads), 1, ElementThreads);
        return rounded;
    }

    public void RmsNorm(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int tokens, float epsilon)
    {
        int n = weight.Length;
        if (input.Length < (long)tokens * n || output.Length < (long)tokens * n) throw new ArgumentException($"RMS norm of {tokens}×{n} values needs buffers that size");
        _context.MakeCurrent();
        DeviceBuffer x = _input.Get((long)tokens * n * sizeof(float));
        DeviceBuffer w = _side.Get((long)n * sizeof(float));
        DeviceBuffer y = _output.Get((long)tokens * n * sizeof(float));
        x.Upload(input[..(tokens * n)]);
        w.Upload(weight);
        new KernelArguments().Pointer(x.Pointer).Pointer(w.Pointer).Pointer(y.Pointer).Int(n).Float(epsilon)
            .Launch(_context, _kernels.Function("rms_norm"), "rms_norm", (uint)tokens, 1, NormThreads);
        y.Download(output[..(tokens * n)]);
    }

    public void Rope(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition)
    {
        if (tokens <= 0 || heads <= 0) return;
        int half = rope.Dimensions / 2;
        long extent = (long)(tokens - 1) * rowStride + (long)(heads - 1) * headStride + offset + rope.Dimensions;
        if (values.Length < extent) throw new ArgumentException($"RoPE over {tokens} tokens × {heads} heads reaches element {extent}, past {values.Length}");
        // The angles come from the same Rope.Angles the CPU uses, so both rotate by identical cosines and sines.
        int count = tokens * half;
        if (_cos.Length < count)
        {
            _cos = new float[count];
            _sin = new float[count];
        }
        for (int t = 0; t < tokens; t++)
            rope.Angles(firstPosition + t, _cos.AsSpan(t * half, half), _sin.AsSpan(t * half, half));
        _context.MakeCurrent();
        DeviceBuffer v = _input.Get(extent * sizeof(float));
        DeviceBuffer angles = _angles.Get(2L * count * sizeof(float));
        v.Upload<float>(values[..(int)extent]);
        angles.Upload<float>(_cos.AsSpan(0, count));
        angles.Upload<float>(_sin.AsSpan(0, count), (long)count * sizeof(float));
        new KernelArguments().Pointer(v.Pointer).Pointer(angles.Pointer).Pointer(angles.Pointer + (ulong)count * sizeof(float))
            .Int(half).Int(rowStride).Int(headStride).Int(offset).Int(rope.Style == RopeStyle.Normal ? 0 : 1)
            .Launch(_context, _kernels.Function("rope"), "rope", (uint)tokens, (uint)heads, RopeThreads);
        v.Download(values[..(int)extent]);
    }

    public void SiluMul(Span<float> gate, ReadOnlySpan<float> up)
    {
        if (up.Length < gate.Length) throw new ArgumentException($"SiLU gate of {gate.Length} values needs as many up values, not {up.Length}");
        int n = gate.Length;
        if (n == 0) return;
        _context.MakeCurrent();
        DeviceBuffer g = _input.Get((long)n * sizeof(float));
        DeviceBuffer u = _side.Get((long)n * sizeof(float));
        g.Upload<float>(gate);
        u.Upload(up[..n]);
        new KernelArguments().Pointer(g.Pointer).Pointer(u.Pointer).Long(n)
            .Launch(_context, _kernels.Function("silu_mul"), "silu_mul", (uint)((n + ElementThreads - 1) / ElementThreads), 1, ElementThreads);
        g.Download(gate);
    }

    public void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens)
    {
        shape.Validate(cache);
        if (firstPosition + tokens > cache.Capacity) throw new ContextFullException(firstPosition, tokens, cache.Capacity);
        long queryCount = (long)tokens * shape.Heads * shape.KeyDim, outputCount = (long)tokens * shape.Heads * shape.ValueDim;
        if (queries.Length < queryCount || output.Length < outputCount)
            throw new ArgumentException("attention buffers are smaller than the batch");
        long sharedBytes = (long)shape.KeyDim * sizeof(float);
        if (sharedBytes > 48 * 1024) throw new NotSupportedException($"attention keys of {shape.KeyDim} values do not fit the kernel's 48 KiB of shared memory");
        int length = firstPosition + tokens;
        _context.MakeCurrent();
        DeviceKvMirror mirror = Mirror(cache);
        mirror.Update(firstPosition, length);
        DeviceBuffer q = _input.Get(queryCount * sizeof(float));
        DeviceBuffer o = _output.Get(outputCount * sizeof(float));
        DeviceBuffer scores = _scores.Get((long)tokens * shape.Heads * length * sizeof(float));
        q.Upload(queries[..(int)queryCount]);
        new KernelArguments().Pointer(q.Pointer).Pointer(mirror.Keys.Pointer).Pointer(mirror.Values.Pointer).Pointer(o.Pointer).Pointer(scores.Pointer)
            .Int(shape.Heads).Int(shape.KvHeads).Int(shape.KeyDim).Int(shape.ValueDim).Int(cache.KeyWidth).Int(cache.ValueStride)
            .Float(shape.Scale).Int(firstPosition).Int(length)
            .Launch(_context, _kernels.Function("attention"), "attention", (uint)shape.Heads, (uint)tokens, AttentionThreads, (uint)sharedBytes);
        o.Download(output[..(int)outputCount]);
    }

    private DeviceKvMirror Mirror(KvLayerCache cache)
    {
        if (_mirrors.TryGetValue(cache, out DeviceKvMirror? mirror)) return mirror;
        // Caches of finished sessions are collected by the GC; their GPU copies are freed here, on a thread
        // that has the context current, rather than in a finalizer.
        for (int i = _mirrorList.Count - 1; i >= 0; i--)
        {
            if (_mirrorList[i].Cache.TryGetTarget(out _)) continue;
            _mirrorList[i].Mirror.Dispose();
            _mirrorList.RemoveAt(i);
        }
        mirror = new DeviceKvMirror(_context, cache);
        _mirrors.Add(cache, mirror);
        _mirrorList.Add((new WeakReference<KvLayerCache>(cache), mirror));
        return mirror;
    }

    public void Dispose()
    {
        foreach ((_, DeviceKvMirror mirror) in _mirrorList) mirror.Dispose();
        _mirrorList.Clear();
        _mirrors.Clear();
        _weights.Dispose();
        _input.Dispose();
        _rounded.Dispose();
        _output.Dispose();
        _side.Dispose();
        _angles.Dispose();
        _scores.Dispose();
        _kernels.Dispose();
        _context.Dispose();
    }
}
