using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// Decode attention (Kernels/attention_decode.cu): batches the tiled prompt kernel does not take (single tokens,
/// decode batches of a few) split each query's positions into chunks over enough blocks to fill the GPU, the query
/// heads sharing a cache head (up to 16 per block) scoring each key tile together with the dot products spread over
/// the whole block; the last block of a query merges the chunks' partial softmax results, in the same launch. The
/// grid is fixed per shape and batch, the number of chunks in use follows the length on the device, so a recorded
/// decode step replays at any later position.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>
    /// Whether batches of fewer than <see cref="PrefillAttentionMinimumTokens"/> queries use the flash-decoding kernel
    /// (the default; FATHOM_CUDA_DECODE_ATTENTION=0 turns it off: one block per query head then walks every position).
    /// </summary>
    public bool DecodeAttention { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_DECODE_ATTENTION") != "0";

    /// <summary>At most this many chunks per query (DECODE_MAX_SPLITS).</summary>
    private const int DecodeMaxSplits = 256;

    /// <summary>Blocks the chunked kernel aims for per multiprocessor, so one cache head at one token still fills the GPU.</summary>
    private const int DecodeBlocksPerMultiprocessor = 2;

    /// <summary>Merge counters the decode kernel can use: (token, head tile) pairs of one launch, at most.</summary>
    private const int DecodeCounterCapacity = 16_384;

    private DeviceScratch? _decodePartials;

    /// <summary>The decode kernels' partial rows and softmax sums of their chunks (each kernel's own layout).</summary>
    private DeviceScratch DecodePartials => _decodePartials ??= new DeviceScratch(_context, _retirement);

    /// <summary>
    /// Chunks per query for the decode kernels that size their grid to one wave (the grouped and MLA kernels): a block
    /// per multiprocessor for <paramref name="blocksPerChunk"/> blocks of each chunk (at least one chunk, at most
    /// <see cref="DecodeMaxSplits"/>), and at most as many as keep the partial rows one merge reads
    /// (<paramref name="rowBytesPerChunk"/> per chunk) within <paramref name="mergeBytes"/>.
    /// </summary>
    private static int OneWaveDecodeSplits(long blocksPerChunk, long rowBytesPerChunk, int multiprocessors, long mergeBytes)
    {
        long mergeLimit = Math.Max(1, mergeBytes / rowBytesPerChunk);
        long oneWave = Math.Clamp(multiprocessors / blocksPerChunk, 1, DecodeMaxSplits);
        return (int)Math.Min(oneWave, mergeLimit);
    }
    private readonly DeviceBuffer _decodeCounters;
    private readonly Dictionary<IntPtr, int> _decodeSharedBytes = [];

    /// <summary>
    /// Bytes of partial rows the last block of a (token, head tile) merges at most: it reads them alone, so they bound
    /// the launch's tail (about a microsecond at this size).
    /// </summary>
    private const long DecodeMergeBytes = 256 * 1024;

    /// <summary>
    /// How a query's heads and positions are spread over blocks: the kernel's head capacity (4, 8 or 16: its register
    /// tile), the heads each block takes (<paramref name="group"/> heads share a cache head: the group, or tiles of the
    /// capacity), and the chunks per query. The chunks aim at <see cref="DecodeBlocksPerMultiprocessor"/> blocks per
    /// multiprocessor, at most <see cref="DecodeMaxSplits"/>, and are limited so that the merged rows stay within
    /// <see cref="DecodeMergeBytes"/>; the largest head tile that still fills every multiprocessor under that limit is
    /// taken (MLA's 16 heads: tiles of 4, 32 chunks; R1's 128: tiles of 8, 16 chunks; Qwen's 6: one tile, 85 chunks).
    /// </summary>
    internal static (int Capacity, int HeadTile, int Splits) DecodeTiling(int group, int kvHeads, int valueDim, int tokens, int multiprocessors)
    {
        int capacity = group <= 4 ? 4 : group <= 8 ? 8 : 16;
        while (true)
        {
            int headTile = Math.Min(group, capacity), tiles = (group + headTile - 1) / headTile;
            long blocksPerChunk = (long)kvHeads * tiles * tokens;
            long mergeLimit = Math.Max(1, DecodeMergeBytes / ((long)headTile * valueDim * sizeof(float)));
            int splits = (int)Math.Min(DecodeSplits(multiprocessors, blocksPerChunk), mergeLimit);
            if (capacity == 4 || splits * blocksPerChunk >= multiprocessors) return (capacity, headTile, splits);
            capacity /= 2;
        }
    }

    /// <summary>
    /// Threads per block, value dims per thread and keys per tile: a thread per value dim up to 256 and tiles of 32
    /// keys; wider values (at most 512) two dims per thread and tiles of 16 keys (MLA's 576-wide key tiles then leave
    /// room for two blocks per multiprocessor).
    /// </summary>
    internal static (int Threads, int DimsPerThread, int KeysPerTile) DecodeThreads(int valueDim) =>
        valueDim <= 256 ? ((valueDim + 31) / 32 * 32, 1, 32) : (256, 2, 16);

    /// <summary>Chunks per query: enough blocks for <see cref="DecodeBlocksPerMultiprocessor"/> per multiprocessor, at most <see cref="DecodeMaxSplits"/>.</summary>
    internal static int DecodeSplits(int multiprocessors, long blocksPerChunk) =>
        (int)Math.Clamp((DecodeBlocksPerMultiprocessor * (long)multiprocessors + blocksPerChunk - 1) / blocksPerChunk, 1, DecodeMaxSplits);

    /// <summary>
    /// Dynamic shared memory of attention_decode_H_A in floats (the layout its comment gives): the softmax state, the
    /// tile's weights and scores, the score slices, the queries, the key tile (which the merge reuses for its
    /// weights, so at least <paramref name="capacity"/> × <paramref name="splits"/>), and the value tile unless the
    /// values lie inside the keys.
    /// </summary>
    internal static long DecodeSharedFloats(int capacity, int warps, int keysPerTile, int keyDim, int valueDim, bool valuesInKeys, int splits) =>
        5L * capacity + 2L * keysPerTile * capacity + 32L * warps * capacity + (long)keyDim * capacity
        + Math.Max((long)keysPerTile * (keyDim + 1), (long)capacity * splits) + (valuesInKeys ? 0 : (long)keysPerTile * valueDim);

    /// <summary>
    /// The attention of a small batch with the chunked kernel; false leaves it to the one-block-per-head kernel (turned
    /// off, values wider than 512, more (token, head tile) pairs than counters, or shared memory beyond the GPU's limit). <paramref name="step"/> and
    /// <paramref name="position"/> are <see cref="StepPosition"/>'s.
    /// </summary>
    private bool DecodeAttentionBatch(ulong queries, ulong keys, ulong values, ulong output, KvLayerCache cache, in AttentionShape shape,
        ulong step, int position, int tokens)
    {
        if (!DecodeAttention || shape.ValueDim > 512 || tokens > MaxGridRows) return false;
        if (GroupedDecodeAttentionBatch(queries, keys, values, output, cache, shape, step, position, tokens)) return true;
        if (MlaDecodeAttentionBatch(queries, keys, values, output, cache, shape, step, position, tokens)) return true;
        int group = shape.Heads / shape.KvHeads;
        (int capacity, int headTile, int splits) = DecodeTiling(group, shape.KvHeads, shape.ValueDim, tokens, Device.Multiprocessors);
        int tiles = (group + headTile - 1) / headTile;
        uint cacheHeadTiles = (uint)(shape.KvHeads * tiles);
        if ((long)tokens * cacheHeadTiles > DecodeCounterCapacity) return false;
        // MLA's latent cache keeps each value row at the start of its key row: one tile then holds both.
        bool valuesInKeys = values == keys && cache.ValueStride == cache.KeyWidth && shape.ValueDim <= shape.KeyDim && shape.KvHeads == 1;
        (int threads, int dimsPerThread, int keysPerTile) = DecodeThreads(shape.ValueDim);
        long sharedBytes = sizeof(float) * DecodeSharedFloats(capacity, threads / 32, keysPerTile, shape.KeyDim, shape.ValueDim, valuesInKeys, splits);
        string name = $"attention_decode_{capacity}_{dimsPerThread}_{keysPerTile}";
        IntPtr function = _kernels.Function(name);
        if (!_decodeSharedBytes.TryGetValue(function, out int allowed)) allowed = 48 * 1024;
        if (sharedBytes > allowed)
        {
            int optIn = _context.Driver.Attribute(_context.Driver.Device(Device.Ordinal), DeviceAttribute.MaxSharedMemoryPerBlockOptin);
            if (sharedBytes > optIn) return false;
            _context.Driver.SetMaxDynamicSharedBytes(function, (int)sharedBytes);
            _decodeSharedBytes[function] = (int)sharedBytes;
        }

        long slots = (long)tokens * shape.Heads * splits;
        // The slots' unnormalized output rows (rounded up to 16 bytes), then their softmax sums (doubles), then their
        // maxima: attention_decode.cu's layout.
        long rowFloats = (slots * shape.ValueDim + 3) & ~3L;
        DeviceBuffer partials = DecodePartials.Get(sizeof(float) * rowFloats + (sizeof(double) + sizeof(float)) * slots);
        new KernelArguments().Pointer(queries).Pointer(keys).Pointer(values).Pointer(partials.Pointer).Pointer(_decodeCounters.Pointer).Pointer(output)
            .Int(shape.Heads).Int(shape.KvHeads).Int(shape.KeyDim).Int(shape.ValueDim).Int(cache.KeyWidth).Int(cache.ValueStride)
            .Float(shape.Scale).Pointer(step).Int(position).Int(splits).Int(headTile).Int(valuesInKeys ? 1 : 0)
            .Launch(_context, function, name, (uint)splits, cacheHeadTiles, (uint)tokens, (uint)threads, (uint)sharedBytes);
        return true;
    }

    /// <summary>
    /// The merge counters, one per (token, head tile) of a launch: zero between launches (the merging block resets its
    /// own), so they are zeroed once, here, when the backend is made (never inside a recorded step).
    /// </summary>
    private DeviceBuffer ZeroedDecodeCounters()
    {
        var counters = new DeviceBuffer(_context, DecodeCounterCapacity * sizeof(uint));
        _context.Driver.Fill32(counters.Pointer, 0, DecodeCounterCapacity, _context.Stream);
        _context.Synchronize("zeroing the decode attention's counters");
        return counters;
    }

    /// <summary>
    /// GPU time in microseconds of one <see cref="Attention"/> call with these operands (the kernels <see cref="DecodeAttention"/>
    /// and <see cref="PrefillAttention"/> choose), for the attention micro-benchmark: <paramref name="calls"/> calls are
    /// recorded into one CUDA graph, which is replayed once to warm up and once between two events, so host launch
    /// time is not counted. Queries, output and cache must lie in attached buffers.
    /// </summary>
    public double MeasureAttention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens, int calls)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(calls, 1);
        if (!TryResident(queries, out _) || !TryResident(output, out _) || !TryResident(cache.Keys, out _) || !TryResident(cache.Values, out _))
            throw new ArgumentException("the measured attention's queries, output and cache must lie in attached buffers");
        if (_graphs.Mode != StepMode.Direct) throw new InvalidOperationException("an attention is measured outside decode steps");
        _context.MakeCurrent();
        Attention(queries, cache, output, shape, firstPosition, tokens); // scratch grown and shared memory set before the capture
        _context.Synchronize("the attention warm-up");
        _context.Driver.BeginCapture(_context.Stream);
        IntPtr graph;
        try
        {
            for (int i = 0; i < calls; i++) Attention(queries, cache, output, shape, firstPosition, tokens);
        }
        finally
        {
            int result = _context.Driver.EndCapture(_context.Stream, out graph);
            if (result != 0) throw new CudaException("cuStreamEndCapture", result, _context.Driver.Describe(result));
        }
        IntPtr exec = IntPtr.Zero, start = IntPtr.Zero, end = IntPtr.Zero;
        try
        {
            exec = _context.Driver.InstantiateGraph(graph);
            start = _context.Driver.CreateEvent();
            end = _context.Driver.CreateEvent();
            _context.Driver.LaunchGraph(exec, _context.Stream);
            _context.Driver.RecordEvent(start, _context.Stream);
            _context.Driver.LaunchGraph(exec, _context.Stream);
            _context.Driver.RecordEvent(end, _context.Stream);
            _context.Synchronize("the measured attention");
            return 1000.0 * _context.Driver.ElapsedMilliseconds(start, end) / calls;
        }
        finally
        {
            if (start != IntPtr.Zero) _context.Driver.DestroyEvent(start);
            if (end != IntPtr.Zero) _context.Driver.DestroyEvent(end);
            if (exec != IntPtr.Zero) _context.Driver.DestroyGraphExec(exec);
            _context.Driver.DestroyGraph(graph);
        }
    }

    private void DisposeDecodeAttention()
    {
        _decodePartials?.Dispose();
        _decodeCounters.Dispose();
    }
}
