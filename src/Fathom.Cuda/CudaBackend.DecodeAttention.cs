using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// Decode attention (Kernels/attention_decode.cu): batches the tiled prompt kernel does not take (single tokens,
/// decode batches of a few) split each query's positions into chunks over enough blocks to fill the GPU, the query
/// heads sharing a cache head scoring each key tile together, and a second kernel merges the chunks' partial softmax
/// results. The chunk count is fixed per shape and batch, the chunk size follows the length on the device, so a
/// recorded decode step replays at any later position.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>
    /// Whether batches of fewer than <see cref="PrefillAttentionMinimumTokens"/> queries use the flash-decoding kernel
    /// (the default; FATHOM_CUDA_DECODE_ATTENTION=0 turns it off: one block per query head then walks every position).
    /// </summary>
    public bool DecodeAttention { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_DECODE_ATTENTION") != "0";

    /// <summary>Keys per shared-memory tile (DECODE_KEYS), and at most this many chunks per query (DECODE_MAX_SPLITS).</summary>
    private const int DecodeKeys = 32, DecodeMaxSplits = 256, DecodeCombineThreads = 128;

    /// <summary>Blocks the chunked kernel aims for per multiprocessor, so one cache head at one token still fills the GPU.</summary>
    private const int DecodeBlocksPerMultiprocessor = 2;

    private DeviceScratch? _decodePartials;
    private readonly Dictionary<IntPtr, int> _decodeSharedBytes = [];

    /// <summary>
    /// How the query heads of one cache head (<paramref name="group"/> of them) are spread over a block: heads per
    /// warp, and heads per block (the block's tile; larger groups take several tiles, each reading the chunk's rows).
    /// GQA groups up to 8 take a warp per head; MLA's 16 heads two per warp; larger groups tiles of 32, four per warp.
    /// </summary>
    internal static (int HeadsPerWarp, int HeadTile) DecodeHeadTiling(int group) =>
        group <= 8 ? (1, group) : group <= 16 ? (2, group) : (4, Math.Min(32, group));

    /// <summary>Chunks per query: enough blocks for <see cref="DecodeBlocksPerMultiprocessor"/> per multiprocessor, at most <see cref="DecodeMaxSplits"/>.</summary>
    internal static int DecodeSplits(int multiprocessors, long blocksPerChunk) =>
        (int)Math.Clamp((DecodeBlocksPerMultiprocessor * (long)multiprocessors + blocksPerChunk - 1) / blocksPerChunk, 1, DecodeMaxSplits);

    /// <summary>
    /// The attention of a small batch with the chunked kernels; false leaves it to the one-block-per-head kernel (turned
    /// off, values wider than 512, or shared memory beyond the GPU's limit). <paramref name="step"/> and
    /// <paramref name="position"/> are <see cref="StepPosition"/>'s.
    /// </summary>
    private bool DecodeAttentionBatch(ulong queries, ulong keys, ulong values, ulong output, KvLayerCache cache, in AttentionShape shape,
        ulong step, int position, int tokens)
    {
        if (!DecodeAttention || shape.ValueDim > 512 || tokens > MaxGridRows) return false;
        // MLA's latent cache keeps each value row at the start of its key row: one tile then holds both.
        bool valuesInKeys = values == keys && cache.ValueStride == cache.KeyWidth && shape.ValueDim <= shape.KeyDim && shape.KvHeads == 1;
        int group = shape.Heads / shape.KvHeads;
        (int perWarp, int headTile) = DecodeHeadTiling(group);
        int tiles = (group + headTile - 1) / headTile, warps = (headTile + perWarp - 1) / perWarp;
        long sharedBytes = sizeof(float) * ((long)headTile * shape.KeyDim + (long)DecodeKeys * (shape.KeyDim + 1)
            + (valuesInKeys ? 0 : (long)DecodeKeys * shape.ValueDim));
        int accumulators = shape.ValueDim <= 128 ? 4 : shape.ValueDim <= 256 ? 8 : 16;
        string name = $"attention_decode_{accumulators}_{perWarp}";
        IntPtr function = _kernels.Function(name);
        if (!_decodeSharedBytes.TryGetValue(function, out int allowed)) allowed = 48 * 1024;
        if (sharedBytes > allowed)
        {
            int optIn = _context.Driver.Attribute(_context.Driver.Device(Device.Ordinal), DeviceAttribute.MaxSharedMemoryPerBlockOptin);
            if (sharedBytes > optIn) return false;
            _context.Driver.SetMaxDynamicSharedBytes(function, (int)sharedBytes);
            _decodeSharedBytes[function] = (int)sharedBytes;
        }

        uint cacheHeadTiles = (uint)(shape.KvHeads * tiles);
        int splits = DecodeSplits(Device.Multiprocessors, (long)cacheHeadTiles * tokens);
        long slots = (long)tokens * shape.Heads * splits;
        // Per slot: its softmax sum (a double), its maximum, its unnormalized output row (attention_decode.cu's layout).
        DeviceBuffer partials = (_decodePartials ??= new DeviceScratch(_context, _retirement)).Get(slots * (sizeof(double) + sizeof(float) * (1L + shape.ValueDim)));
        new KernelArguments().Pointer(queries).Pointer(keys).Pointer(values).Pointer(partials.Pointer)
            .Int(shape.Heads).Int(shape.KvHeads).Int(shape.KeyDim).Int(shape.ValueDim).Int(cache.KeyWidth).Int(cache.ValueStride)
            .Float(shape.Scale).Pointer(step).Int(position).Int(splits).Int(headTile).Int(valuesInKeys ? 1 : 0)
            .Launch(_context, function, name, (uint)splits, cacheHeadTiles, (uint)tokens, (uint)(32 * warps), (uint)sharedBytes);
        new KernelArguments().Pointer(partials.Pointer).Pointer(output).Int(shape.Heads).Int(shape.ValueDim).Pointer(step).Int(position).Int(splits)
            .Launch(_context, _kernels.Function("attention_decode_combine"), "attention_decode_combine", (uint)shape.Heads, (uint)tokens, DecodeCombineThreads);
        return true;
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

    private void DisposeDecodeAttention() => _decodePartials?.Dispose();
}
