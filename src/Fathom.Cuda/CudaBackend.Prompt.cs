using Fathom.Cuda.Blas;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// Prompt processing: products of at least <see cref="BlasMinimumTokens"/> tokens on the tensor cores (half-precision
/// operands, FP32 sums: <see cref="HalfPrecisionProduct"/>; or int8 codes, <see cref="CodeProducts"/>, which a prompt's
/// routed experts always use), and a tiled attention for batches of at least <see cref="PrefillAttentionMinimumTokens"/>
/// queries (Kernels/attention_prefill.cu).
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>Attention batches of at least this many tokens use the tiled prompt kernel.</summary>
    public const int PrefillAttentionMinimumTokens = 16;

    private const int PrefillWarps = 8, PrefillKeys = 32, PrefillThreads = PrefillWarps * 32;

    /// <summary>
    /// Whether prompt products of F16, BF16 and quantized weights run on the tensor cores (the default;
    /// FATHOM_CUDA_TENSOR_CORES=0 turns it off). F16 and BF16 weights are multiplied as they are, with the activations
    /// in the same format (the CPU rounds them so too): the products are exact and summed in FP32. Quantized weights
    /// are dequantized to F16 and their rounded activations converted to F16, split per <see cref="SplitHalfProducts"/>.
    /// F32 weights, and every product when this is off, use the single-precision GEMM.
    /// </summary>
    public bool TensorCoreProducts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_TENSOR_CORES") != "0";

    /// <summary>
    /// Whether quantized weights and their activations are each split into two F16 halves, hi + lo (the default;
    /// FATHOM_CUDA_SPLIT_HALVES=0 turns it off), and multiplied as lo·hi + hi·lo + hi·hi: three tensor-core products,
    /// close to FP32 accuracy (relative error about 1e-6). Off, one product of hi·hi loses about one F16 step (5e-4)
    /// per operand, which the test models (and any long chain of roundings to Q8 activations) amplify past the
    /// agreement the engine promises (docs/cuda.md). Values beyond F16's range (65504) are not representable either way.
    /// </summary>
    public bool SplitHalfProducts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_SPLIT_HALVES") != "0";

    /// <summary>
    /// Whether a split product's three terms are two GEMMs (the default; FATHOM_CUDA_SPLIT_CONCAT=0 keeps three): the
    /// halves are stored row by row side by side, a weight row as [lo | hi] and a token's activations as [hi | lo], so
    /// one GEMM along 2n sums lo·hi + hi·lo and a second along n adds hi·hi (reading the hi halves in place, leading
    /// dimension 2n). The same products and the same order of terms, in fewer and longer GEMMs: cuBLAS fills the GPU
    /// better with them (the small products of a 1.5B model most). Dense products only; grouped ones keep three. Settings bit 36.
    /// </summary>
    public bool ConcatenatedSplitTerms { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_SPLIT_CONCAT") != "0";

    /// <summary>
    /// Whether prompt attention batches use a prompt path, <see cref="PrefillAttentionProducts"/> or the tiled kernel (the
    /// default; FATHOM_CUDA_PREFILL_ATTENTION=0 turns both off, leaving the general one-block-per-query kernel).
    /// </summary>
    public bool PrefillAttention { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_PREFILL_ATTENTION") != "0";

    /// <summary>
    /// Whether a prompt batch's attention runs as matrix products when <see cref="PrefillAttention"/> is on and cuBLAS is
    /// loaded (the default; FATHOM_CUDA_PREFILL_ATTENTION=tiled picks the tiled flash-style kernel instead): the scores by
    /// an FP32 GEMM, a softmax kernel per row, the weighted value sums by a second FP32 GEMM (<see cref="PrefillAttentionOnProducts"/>).
    /// </summary>
    public bool PrefillAttentionProducts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_PREFILL_ATTENTION") != "tiled";

    /// <summary>
    /// Whether <see cref="PrefillAttentionProducts"/> multiply on the tensor cores, 3×TF32: each operand split into
    /// hi = tf32(x) and lo = tf32(x − hi) (Kernels/attention_prefill.cu's split_tf32; the softmax writes the
    /// probabilities so), each product summed as lo·hi + hi·lo + hi·hi, three TF32 GEMMs with FP32 sums; hi + lo holds
    /// x to about 2⁻²⁴, as FP32 does. Null (the default) is off: FP32 products for every shape. Run pattn-2 had the
    /// split faster for a single cache head (MLA's latent cache: V3-8l pp512 +2–3 %), but with the prompt pass as it is
    /// since (runs 48–49, docs/gpu-notes.md) the FP32 products are faster there too (V3-8l pp512 +1–6 %, R1 +4.7 %), and
    /// for grouped-query attention they always were (Qwen-1.5B: the split −10 %, its many small batched products
    /// tripled). FATHOM_CUDA_PREFILL_TF32=1 or 0 forces it on or off. The split copies take scratch of their own
    /// (<see cref="PrefillSplitReserveBytes"/>, which the placement reserves only when the split is on).
    /// </summary>
    public bool? PrefillTensorCores { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_PREFILL_TF32") switch
    {
        "1" => true,
        "0" => false,
        _ => null,
    };

    private DeviceScratch? _prefillSplitScratch;

    /// <summary>
    /// The most bytes of scores one chunk of <see cref="PrefillAttentionProducts"/> writes (256 MiB by default; the
    /// chunk is one token's rows when even those are larger). Within the placement's reserve: DeviceMemoryReserve counts
    /// a 512-token batch's scores over the whole context, and a chunk never holds more rows or positions than that.
    /// </summary>
    internal long PrefillScoreBytesLimit { get; set; } = 256L << 20;

    private const int PrefillSoftmaxThreads = 128;

    private DeviceScratch? _halfActivationScratch, _halfWeightScratch;
    // The last activations converted to halves: source, count, the weight's activation format, the operand type,
    // whether split, the op count when made (-1: not reusable), where the halves are (hi, then lo), and their row: 0 when
    // all hi come before all lo, else the values per row when rows of hi and lo alternate (ConcatenatedSplitTerms).
    // Reused as _lastRounding is.
    private (ulong Source, long Count, GgmlType Format, HalfType Operands, bool Split, long Op, ulong Halves, int Row) _lastHalves;
    private readonly Dictionary<IntPtr, int> _prefillSharedBytes = [];

    private DeviceScratch HalfActivationScratch => _halfActivationScratch ??= new DeviceScratch(_context, _retirement);

    /// <summary>
    /// Whether dense prompt products of the types <see cref="MultipliesCodes"/> takes multiply integer codes
    /// (Kernels/mmq.cu) instead of the split F16 GEMMs: the activations quantized once to int8 codes as the CPU rounds
    /// them, the weights' blocks decoded to int8 codes in shared memory, exact integer sums scaled in FP32, no F16 copy
    /// of the weight. Off by default (FATHOM_CUDA_MMQ=1 turns it on): on the H200 the cuBLAS GEMMs of a dense 512-token
    /// product are faster (docs/gpu-notes.md, runs ppmoe-2, mmq-1 and mmqx-1: Qwen-1.5B pp512 26,191 t/s against 20,182 on pipelined large code tiles). A prompt's routed experts use codes either way
    /// (<see cref="AddRoutedExperts"/>).
    /// </summary>
    public bool CodeProducts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_MMQ") == "1";

    /// <summary>
    /// Whether small-tile code products (<see cref="CodeTileShape.Small"/>; the large tiles always fold) fold each weight
    /// block's integer sub-scales into the integer sums and scale once per block (Kernels/mmq.cu's mmqf_T; the default,
    /// about 9 % faster on the V3-8l prompt; FATHOM_CUDA_MMQ_FOLDED=0 scales every 16 sums in FP32 instead, mmq_T). Both
    /// are exact integer sums and differ in the FP32 rounding of the scaling only.
    /// </summary>
    public bool FoldedCodeScales { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_MMQ_FOLDED") != "0";

    /// <summary>Weight rows and activation rows of one small code-product tile (Kernels/mmq.cu's MMQ_ROWS, MMQ_TOKENS).</summary>
    public const int CodeTileRows = 64, CodeTileTokens = 32;

    /// <summary>Activation rows of one large code-product tile (Kernels/mmq.cu's MMQT_TOKENS; 64 or 128 weight rows).</summary>
    public const int LargeCodeTileTokens = 64;

    /// <summary>
    /// The tiles products on codes run in: <see cref="CodeTileShape.Automatic"/> by default (large tiles, 128 or 64
    /// weight rows × 64 tokens, mmqt_T); FATHOM_CUDA_MMQ_TILES=small, 64 or 128 picks one.
    /// </summary>
    public CodeTileShape CodeTiles { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_MMQ_TILES") switch
    {
        "small" => CodeTileShape.Small,
        "64" => CodeTileShape.Rows64,
        "128" => CodeTileShape.Rows128,
        _ => CodeTileShape.Automatic,
    };

    /// <summary>Activation rows per tile of the code products <see cref="CodeTiles"/> selects.</summary>
    private int CodeTokensPerTile => CodeTiles == CodeTileShape.Small ? CodeTileTokens : LargeCodeTileTokens;

    /// <summary>
    /// The dynamic shared memory of a large code tile (Kernels/mmq.cu's MmqtLayout): weight and activation codes
    /// (272 bytes a row), the weights' multipliers and offsets per granule of <paramref name="granule"/> values, their
    /// block scales, the activations' Σcodes per granule and d per block.
    /// </summary>
    public static int CodeTileSharedBytes(int weightRows, int granule)
    {
        const int pitch = 272, tokens = LargeCodeTileTokens, blockPitch = 9;
        int granulePitch = 256 / granule + 1;
        return weightRows * pitch + tokens * pitch + 2 * weightRows * granulePitch * sizeof(int) + weightRows * blockPitch * 2 * sizeof(float)
            + tokens * granulePitch * sizeof(int) + tokens * blockPitch * sizeof(float);
    }

    /// <summary>
    /// Whether large code tiles run pipelined (Kernels/mmq.cu's mmqtp_T: each 256-column step's weight bytes and
    /// activation codes copied with cp.async while the previous step multiplies) where two such tiles fit on a
    /// multiprocessor (<see cref="PipelinedTilesPerMultiprocessor"/>), else as mmqt_T. On by default;
    /// FATHOM_CUDA_MMQ_PIPELINE=0 keeps mmqt_T everywhere. Both give the same exact integer sums and FP32 scaling.
    /// </summary>
    public bool PipelinedCodeTiles { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_MMQ_PIPELINE") != "0";

    /// <summary>Tiles a multiprocessor must hold at once for the pipelined large tiles to be taken (the plain ones hold two or four).</summary>
    public const int PipelinedTilesPerMultiprocessor = 2;

    /// <summary>
    /// The dynamic shared memory of a pipelined large code tile (Kernels/mmq.cu's MmqtpLayout) for a weight of
    /// <paramref name="type"/>: weight codes, two buffers of activation codes (272 bytes a row), the staged weight
    /// bytes of a step (a row's blocks from the copy-aligned word holding their first byte), the weights' block scales,
    /// the activations' Σcodes per granule and d per block, and the weights' int8 multipliers and offsets per granule.
    /// </summary>
    public static int PipelinedCodeTileSharedBytes(int weightRows, GgmlType type)
    {
        // Per type (mmq.cu's MmqtQ*): granule, weight block bytes, sub-blocks of 32 per block, copy width, offsets.
        (int granule, int blockBytes, int blockSubs, int copy, bool offsets) = type switch
        {
            GgmlType.Q8_0 => (32, 34, 1, 16, false),
            GgmlType.Q4_K => (32, 144, 8, 16, true),
            GgmlType.Q6_K => (16, 210, 8, 4, false),
            GgmlType.IQ2_XXS => (32, 66, 8, 16, false),
            GgmlType.IQ1_S => (32, 50, 8, 16, true),
            _ => throw new NotSupportedException($"no pipelined code tiles for {type}"),
        };
        const int pitch = 272, tokens = LargeCodeTileTokens, blockPitch = 9, step = 256;
        int granulePitch = step / granule + 1;
        int stepBytes = step / 32 / blockSubs * blockBytes;
        int stagePitch = (stepBytes + 2 * (copy - 1)) / copy * copy;
        return weightRows * pitch + 2 * tokens * pitch + weightRows * stagePitch + weightRows * blockPitch * 2 * sizeof(float)
            + tokens * granulePitch * sizeof(int) + tokens * blockPitch * sizeof(float) + (offsets ? 2 : 1) * weightRows * granulePitch;
    }

    private readonly Dictionary<IntPtr, int> _codeTileSharedBytes = [];
    private int _multiprocessorSharedBytes = -1;

    /// <summary>Whether <see cref="PipelinedTilesPerMultiprocessor"/> blocks of <paramref name="sharedBytes"/> fit in one multiprocessor's shared memory.</summary>
    private bool PipelinedTilesFit(int sharedBytes)
    {
        if (_multiprocessorSharedBytes < 0)
        {
            CudaDriver driver = _context.Driver;
            int device = driver.Device(Device.Ordinal);
            // Each resident block also holds the driver's reserved shared memory; count it against the whole.
            _multiprocessorSharedBytes = driver.Attribute(device, DeviceAttribute.MaxSharedMemoryPerMultiprocessor)
                - PipelinedTilesPerMultiprocessor * driver.Attribute(device, DeviceAttribute.ReservedSharedMemoryPerBlock);
        }
        return (long)PipelinedTilesPerMultiprocessor * sharedBytes <= _multiprocessorSharedBytes;
    }

    private const int CodeThreads = 128, CodeQuantizeThreads = 256;

    private DeviceScratch? _codeScratch, _codeSumScratch;
    // The last activations quantized to codes for dense products: source, count, format, op count when made (-1: not
    // reusable), codes and sums. Reused as _lastRounding is.
    private (ulong Source, long Count, GgmlType Format, long Op, ulong Codes, ulong Sums) _lastCodes;

    /// <summary>Whether products of <paramref name="type"/> can run on integer codes here: a type of <see cref="CodeKernelSuffix"/> on a GPU of compute capability 8.0 or later (int8 tensor-core products).</summary>
    public bool MultipliesCodes(GgmlType type) => Device.Architecture >= 80 && CodeKernelSuffix(type) is not null;

    /// <summary>The types Kernels/mmq.cu decodes to codes (the goal models' types), by kernel suffix.</summary>
    public static string? CodeKernelSuffix(GgmlType type) => type switch
    {
        GgmlType.Q8_0 => "q8_0",
        GgmlType.Q4_K => "q4_k",
        GgmlType.Q6_K => "q6_k",
        GgmlType.IQ2_XXS => "iq2_xxs",
        GgmlType.IQ1_S => "iq1_s",
        _ => null,
    };

    /// <summary>
    /// A prompt batch's product on integer codes when <see cref="CodeProducts"/> and <see cref="MultipliesCodes"/> allow it.
    /// </summary>
    private bool CodeProduct(WeightMatrix weight, DeviceWeight w, ulong x, bool stagedInput, ulong y, long outputCount, int tokens)
    {
        if (!CodeProducts || !MultipliesCodes(weight.Format.Type)) return false;
        ProductOnCodes(weight, w, x, stagedInput, y, outputCount, tokens);
        return true;
    }

    /// <summary>The product on codes: the input's codes (made or reused), then one mmq launch over (row tile, token tile).</summary>
    private void ProductOnCodes(WeightMatrix weight, DeviceWeight w, ulong x, bool stagedInput, ulong y, long outputCount, int tokens)
    {
        int rows = weight.Rows, n = weight.Columns;
        GgmlType activation = weight.Format.DotActivationType;
        (ulong codes, ulong sums) = DenseCodes(activation, x, tokens, n, stagedInput);
        ulong source = _lastCodes.Source, end = source + (ulong)_lastCodes.Count * sizeof(float);
        _lastCodes.Op = y < end && source < y + (ulong)outputCount * sizeof(float) ? -1 : _ops;
        LaunchCodeProduct(weight, w.Pointer, 0, codes, sums, 0, 0, 0, y, rows, tokens, (uint)((tokens + CodeTokensPerTile - 1) / CodeTokensPerTile));
    }

    /// <summary>
    /// <c>output[t, r] = weight.Row(r) · input[t]</c> on integer codes at any token count (prompt products use it from
    /// <see cref="BlasMinimumTokens"/> tokens); throws when <see cref="MultipliesCodes"/> does not take the weight's type.
    /// </summary>
    public void MatMulCodes(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens)
    {
        if (!MultipliesCodes(weight.Format.Type)) throw new NotSupportedException($"{weight.Name}: {weight.Format.Type} products on integer codes are not available here");
        if (OnHost(weight)) throw new InvalidOperationException($"{weight.Name} is placed on the CPU");
        int n = weight.Columns, rows = weight.Rows;
        if (tokens <= 0) return;
        if (input.Length < (long)tokens * n) throw new ArgumentException($"{weight.Name}: input holds {input.Length} values, {tokens}×{n} needed");
        if (output.Length < (long)tokens * rows) throw new ArgumentException($"{weight.Name}: output holds {output.Length} values, {tokens}×{rows} needed");
        _context.MakeCurrent();
        _ops++;
        using OperationProfiler.Scope? profile = _profiler?.Measure("MatMulCodes");
        DeviceWeight w = _weights.Get(weight);
        Span<float> y = output[..(tokens * rows)];
        ulong x = In(input[..(tokens * n)], _input, out bool stagedInput);
        ulong o = Out(y, _output, upload: false, out bool staged);
        ProductOnCodes(weight, w, x, stagedInput, o, y.Length, tokens);
        Return(y, o, staged);
    }

    /// <summary>A dense product's activation codes: made for <paramref name="x"/>, or the last ones when the same input is multiplied again.</summary>
    private (ulong Codes, ulong Sums) DenseCodes(GgmlType activation, ulong x, int tokens, int columns, bool staged)
    {
        long count = (long)tokens * columns;
        if (_lastCodes.Op == _ops - 1 && _lastCodes.Source == x && _lastCodes.Count == count && _lastCodes.Format == activation)
            return (_lastCodes.Codes, _lastCodes.Sums);
        _codeScratch ??= new DeviceScratch(_context, _retirement);
        _codeSumScratch ??= new DeviceScratch(_context, _retirement);
        (ulong codes, ulong sums) = QuantizeCodes(activation, x, 0, tokens, columns, _codeScratch, _codeSumScratch);
        // A staging buffer's address holds other data next time: such codes are never reused (0 is no device address).
        _lastCodes = (staged ? 0 : x, count, activation, -1, codes, sums);
        return (codes, sums);
    }

    /// <summary>
    /// <paramref name="rowCount"/> activation rows of <paramref name="columns"/> as int8 codes and per-16 (d, d·Σcodes),
    /// rounded as the CPU rounds them to <paramref name="activation"/> (Q8_K or Q8_0); row <c>p</c> reads row
    /// <c>rowMap[p]</c> of <paramref name="x"/> (a device int array) or, without a map, row <c>p</c>.
    /// </summary>
    private (ulong Codes, ulong Sums) QuantizeCodes(GgmlType activation, ulong x, ulong rowMap, int rowCount, int columns, DeviceScratch codeScratch, DeviceScratch sumScratch)
    {
        long values = (long)rowCount * columns;
        ulong codes = codeScratch.Get(Math.Max(values, 16)).Pointer;
        ulong sums = sumScratch.Get(Math.Max(values / 16 * 2 * sizeof(float), 16)).Pointer;
        (string name, uint blocks) = CodeQuantizer(activation, x, columns); // CudaBackend.PromptFused.cs
        IntPtr function = _kernels.Function(name);
        for (int first = 0; first < rowCount; first += MaxGridRows)
        {
            ulong map = rowMap == 0 ? 0 : rowMap + (ulong)first * sizeof(int);
            // Without a map the launch's rows start at `first`; with one, the map gives their sources.
            ulong from = rowMap == 0 ? x + (ulong)first * (ulong)columns * sizeof(float) : x;
            new KernelArguments().Pointer(from).Pointer(map).Pointer(codes + (ulong)first * (ulong)columns).Pointer(sums + (ulong)first * (ulong)(columns / 16) * 8).Int(columns)
                .Launch(_context, function, name, blocks, (uint)Math.Min(MaxGridRows, rowCount - first), CodeQuantizeThreads);
        }
        return (codes, sums);
    }

    /// <summary>
    /// One mmq launch: weight rows from <paramref name="weight"/> or, with a <paramref name="table"/>, from the table's
    /// entry for each tile's expert; activation rows in tiles of <see cref="CodeTokensPerTile"/> over [0, tokens) or,
    /// with <paramref name="tiles"/>, the listed (expert, first row) tiles of the experts' segments (at most
    /// <paramref name="tileRows"/>). Output row p at y + p·rows.
    /// </summary>
    private void LaunchCodeProduct(WeightMatrix shape, ulong weight, ulong table, ulong codes, ulong sums, ulong tiles, ulong tileCount, ulong segments,
        ulong y, int rows, int tokens, uint tileRows)
    {
        string suffix = CodeKernelSuffix(shape.Format.Type)!;
        KernelArguments arguments = new KernelArguments().Pointer(weight).Pointer(table).Long(shape.RowBytes).Pointer(codes).Pointer(sums)
            .Pointer(tiles).Pointer(tileCount).Pointer(segments).Pointer(y).Long(rows).Int(rows).Int(shape.Columns).Int(tokens);
        if (CodeTiles == CodeTileShape.Small)
        {
            string name = (FoldedCodeScales ? "mmqf_" : "mmq_") + suffix;
            arguments.Launch(_context, _kernels.Function(name), shape.Name, (uint)((rows + CodeTileRows - 1) / CodeTileRows), tileRows, CodeThreads);
            return;
        }
        // 128-row tiles once there is one per multiprocessor; below that, 64-row tiles keep more of them busy.
        long largeTiles = (rows + 127L) / 128 * tileRows;
        int warpRows = CodeTiles switch
        {
            CodeTileShape.Rows64 => 2,
            CodeTileShape.Rows128 => 4,
            _ => largeTiles >= Device.Multiprocessors ? 4 : 2,
        };
        int tileWeightRows = 32 * warpRows;
        int sharedBytes = CodeTileSharedBytes(tileWeightRows, shape.Format.Type == GgmlType.Q6_K ? 16 : 32);
        string kernel = $"mmqt{warpRows}_{suffix}";
        if (PipelinedCodeTiles && PipelinedTilesFit(PipelinedCodeTileSharedBytes(tileWeightRows, shape.Format.Type)))
            (sharedBytes, kernel) = (PipelinedCodeTileSharedBytes(tileWeightRows, shape.Format.Type), $"mmqtp{warpRows}_{suffix}");
        IntPtr function = _kernels.Function(kernel);
        if (!_codeTileSharedBytes.TryGetValue(function, out int allowed)) allowed = 48 * 1024;
        if (sharedBytes > allowed)
        {
            int optIn = _context.Driver.Attribute(_context.Driver.Device(Device.Ordinal), DeviceAttribute.MaxSharedMemoryPerBlockOptin);
            if (sharedBytes > optIn) throw new NotSupportedException($"{kernel} needs {sharedBytes} bytes of shared memory; {Device.Name} allows {optIn} (FATHOM_CUDA_MMQ_TILES=small fits)");
            _context.Driver.SetMaxDynamicSharedBytes(function, sharedBytes);
            _codeTileSharedBytes[function] = sharedBytes;
        }
        arguments.Int(sharedBytes)
            .Launch(_context, function, shape.Name, (uint)((rows + tileWeightRows - 1) / tileWeightRows), tileRows, (uint)(64 * warpRows), (uint)sharedBytes);
    }

    private DeviceScratch HalfWeightScratch => _halfWeightScratch ??= new DeviceScratch(_context, _retirement);

    /// <summary>
    /// A prompt batch's product on the tensor cores, when <see cref="TensorCoreProducts"/> allows it for the weight's
    /// type; false leaves it to the single-precision path. <paramref name="x"/> is the unrounded input. Quantized
    /// weights are dequantized in row chunks (<see cref="DequantizedFloatsLimit"/> values at a time), as the FP32 path does.
    /// </summary>
    private bool HalfPrecisionProduct(WeightMatrix weight, DeviceWeight w, ulong x, bool stagedInput, ulong y, long outputCount, int tokens)
    {
        GgmlType type = weight.Format.Type;
        if (!TensorCoreProducts || type == GgmlType.F32) return false;
        if (CodeProduct(weight, w, x, stagedInput, y, outputCount, tokens)) return true;
        int rows = weight.Rows, n = weight.Columns;
        long count = (long)tokens * n;
        bool dense = type is GgmlType.F16 or GgmlType.BF16, split = SplitHalfProducts && !dense;
        // Side by side, a row's halves must stay 16-byte aligned: n a multiple of 8.
        int row = split && ConcatenatedSplitTerms && n % 8 == 0 ? n : 0;
        HalfType operands = type == GgmlType.BF16 ? HalfType.BF16 : HalfType.F16;
        ulong halves = HalfActivations(weight.Format.DotActivationType, operands, split, x, count, stagedInput, row);
        // As with roundings: the halves may serve the next product unless this one writes into their source.
        _lastHalves.Op = Overlaps(y, outputCount, _lastHalves.Source, _lastHalves.Count) ? -1 : _ops;

        if (dense)
        {
            _blas!.GemmHalf(_blasHandle, operands, w.Pointer, halves, y, rows, n, tokens, rows, accumulate: false);
            return true;
        }
        int chunk = (int)Math.Clamp(DequantizedFloatsLimit / n, 1, rows);
        long chunkHalves = (long)chunk * n;
        DeviceBuffer buffer = HalfWeightScratch.Get((split ? 2 : 1) * chunkHalves * sizeof(ushort));
        // Weight rows side by side as [lo | hi] (activations are [hi | lo]), or all hi then all lo.
        (ulong hi, ulong lo) = row != 0 ? (SecondHalves(buffer.Pointer, row, chunkHalves), buffer.Pointer)
            : (buffer.Pointer, split ? SecondHalves(buffer.Pointer, row, chunkHalves) : 0);
        ulong xHi = halves, xLo = SecondHalves(halves, row, count);
        for (int first = 0; first < rows; first += chunk)
        {
            int chunkRows = Math.Min(chunk, rows - first);
            ulong yChunk = y + (ulong)first * sizeof(float);
            DequantizeToHalves(type, weight.Name, w.Pointer + (ulong)(first * weight.RowBytes), weight.RowBytes, n, hi, lo, (long)chunkRows * n, row);
            if (row != 0)
            {
                // [lo | hi] · [hi | lo] along 2n, then hi·hi along n: the terms in the order of the three GEMMs below.
                _blas!.GemmHalf(_blasHandle, HalfType.F16, lo, xHi, yChunk, chunkRows, 2 * n, tokens, rows, accumulate: false, leadingDimension: 2 * n);
                _blas.GemmHalf(_blasHandle, HalfType.F16, hi, xHi, yChunk, chunkRows, n, tokens, rows, accumulate: true, leadingDimension: 2 * n);
                continue;
            }
            if (split)
            {
                // The small terms first, the main one last: the sum is rounded to FP32 once more at most per term.
                _blas!.GemmHalf(_blasHandle, HalfType.F16, lo, xHi, yChunk, chunkRows, n, tokens, rows, accumulate: false);
                _blas.GemmHalf(_blasHandle, HalfType.F16, hi, xLo, yChunk, chunkRows, n, tokens, rows, accumulate: true);
            }
            _blas!.GemmHalf(_blasHandle, HalfType.F16, hi, xHi, yChunk, chunkRows, n, tokens, rows, accumulate: split);
        }
        return true;
    }

    /// <summary>
    /// Whether grouped prompt products of quantized weights (MLA's per-head k_b and v_b over a batch of at least
    /// <see cref="BlasMinimumTokens"/> tokens) run on the tensor cores as strided batched GEMMs of split F16 halves, as
    /// dense prompt products do (<see cref="HalfPrecisionProduct"/>; the default). FATHOM_CUDA_GROUP_TENSOR_CORES=0 keeps
    /// them on group_matmul_T (Kernels/experts.cu, FP32 on the CUDA cores).
    /// </summary>
    public bool GroupTensorCoreProducts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_GROUP_TENSOR_CORES") != "0";

    /// <summary>
    /// A grouped prompt product on the tensor cores: matrix <c>z</c> (from <paramref name="table"/>) times the tokens'
    /// inputs at <c>x + z·inputStride</c> (a token stride apart) into <c>y + z·outputStride</c>. Its weights are
    /// dequantized to F16 (split into hi and lo per <see cref="SplitHalfProducts"/>) for a run of whole matrices at a time
    /// (<see cref="DequantizedFloatsLimit"/> values), the inputs rounded as the CPU rounds them and converted to halves in
    /// place, and each run is one strided batched GEMM per term. False leaves the product to group_matmul_T.
    /// </summary>
    private bool HalfPrecisionGroupProduct(WeightMatrix shape, ulong table, int count, ulong x, long inputCount, bool stagedInput, int inputStride, int inputTokenStride,
        ulong y, long outputCount, int outputStride, int outputTokenStride, int tokens)
    {
        GgmlType type = shape.Format.Type;
        int rows = shape.Rows, columns = shape.Columns;
        if (!GroupTensorCoreProducts || !TensorCoreProducts || _blas is null || tokens < BlasMinimumTokens) return false;
        if (type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 || columns % 8 != 0) return false;
        // cuBLAS's leading dimensions: a token's input row holds a matrix's columns, its output row the matrix's rows.
        if (inputTokenStride < columns || outputTokenStride < rows) return false;
        bool split = SplitHalfProducts;
        ulong halves = HalfActivations(shape.Format.DotActivationType, HalfType.F16, split, x, inputCount, stagedInput, row: 0);
        _lastHalves.Op = Overlaps(y, outputCount, _lastHalves.Source, _lastHalves.Count) ? -1 : _ops;
        ulong xHi = halves, xLo = SecondHalves(halves, 0, inputCount);

        long matrixHalves = (long)rows * columns;
        int run = (int)Math.Clamp(DequantizedFloatsLimit / matrixHalves, 1, count);
        long runHalves = run * matrixHalves;
        DeviceBuffer buffer = HalfWeightScratch.Get((split ? 2 : 1) * runHalves * sizeof(ushort));
        ulong hi = buffer.Pointer, lo = split ? hi + (ulong)runHalves * sizeof(ushort) : 0;
        for (int first = 0; first < count; first += run)
        {
            int matrices = Math.Min(run, count - first);
            DequantizeGroupToHalves(type, shape.Name, table, first, matrices, shape.RowBytes, columns, hi, lo, matrixHalves);
            ulong inputOffset = (ulong)first * (ulong)inputStride * sizeof(ushort), yRun = y + (ulong)first * (ulong)outputStride * sizeof(float);
            if (split)
            {
                // The small terms first, the main one last, as the dense products add them.
                _blas.GemmHalfBatched(_blasHandle, lo, matrixHalves, xHi + inputOffset, inputTokenStride, inputStride, yRun, outputTokenStride, outputStride,
                    rows, columns, tokens, matrices, accumulate: false);
                _blas.GemmHalfBatched(_blasHandle, hi, matrixHalves, xLo + inputOffset, inputTokenStride, inputStride, yRun, outputTokenStride, outputStride,
                    rows, columns, tokens, matrices, accumulate: true);
            }
            _blas.GemmHalfBatched(_blasHandle, hi, matrixHalves, xHi + inputOffset, inputTokenStride, inputStride, yRun, outputTokenStride, outputStride,
                rows, columns, tokens, matrices, accumulate: split);
        }
        return true;
    }

    /// <summary>
    /// Where the second of two split halves starts (lo for activations, hi for a weight's [lo | hi] rows) in halves at
    /// <paramref name="halves"/>: a <paramref name="row"/> on when rows alternate (<see cref="ConcatenatedSplitTerms"/>),
    /// else after all <paramref name="count"/> of the first.
    /// </summary>
    private static ulong SecondHalves(ulong halves, int row, long count) => halves + (ulong)(row != 0 ? row : count) * sizeof(ushort);

    /// <summary>
    /// The activations as the tensor cores take them: rounded as the CPU rounds them, then in the operand type (hi,
    /// followed by lo when <paramref name="split"/>, <paramref name="count"/> halves each; or, with a
    /// <paramref name="row"/> of values, each token's hi row followed by its lo row: <see cref="ConcatenatedSplitTerms"/>).
    /// </summary>
    private ulong HalfActivations(GgmlType activationType, HalfType operands, bool split, ulong x, long count, bool staged, int row)
    {
        if (_lastHalves.Op == _ops - 1 && _lastHalves.Source == x && _lastHalves.Count == count && _lastHalves.Format == activationType
            && _lastHalves.Operands == operands && _lastHalves.Split == split && _lastHalves.Row == row)
            return _lastHalves.Halves;
        if (operands == HalfType.F16) LearnHalvesAfterSilu(x, count, activationType, split, row); // CudaBackend.PromptFusedSilu.cs
        // F16 (BF16) activations for F16 (BF16) weights: the conversion is that rounding itself.
        bool roundedByConversion = activationType == (operands == HalfType.BF16 ? GgmlType.BF16 : GgmlType.F16);
        DeviceBuffer halves = HalfActivationScratch.Get((split ? 2 : 1) * count * sizeof(ushort));
        ulong lo = split ? SecondHalves(halves.Pointer, row, count) : 0;
        if (operands == HalfType.F16 && !roundedByConversion && RoundToHalves(activationType, x, count, halves.Pointer, lo, row)) // CudaBackend.PromptFused.cs
        {
            _lastHalves = (staged ? 0 : x, count, activationType, operands, split, -1, halves.Pointer, row);
            return halves.Pointer;
        }
        ulong rounded = roundedByConversion ? x : RoundActivations(activationType, x, count, staged);
        KernelArguments arguments = new KernelArguments().Pointer(rounded).Pointer(halves.Pointer);
        string name = operands == HalfType.BF16 ? "floats_to_bf16" : "floats_to_f16";
        if (operands == HalfType.F16) arguments = arguments.Pointer(lo).Int(row);
        arguments.Long(count).Launch(_context, _kernels.Function(name), name, Blocks(count, ElementThreads), 1, ElementThreads);
        // A staging buffer's address holds other data next time: such halves are never reused (0 is no device address).
        _lastHalves = (staged ? 0 : x, count, activationType, operands, split, -1, halves.Pointer, row);
        return halves.Pointer;
    }

    /// <summary>
    /// A prompt batch's attention with the tiled kernel (attention_prefill_N, N = value dims per lane / 32), when the
    /// batch is large enough and the shape fits: value rows of at most 512, shared memory within the GPU's limit.
    /// </summary>
    private bool PrefillAttentionBatch(ulong queries, ulong keys, ulong values, ulong output, KvLayerCache cache, in AttentionShape shape, int firstPosition, int tokens)
    {
        if (!PrefillAttention || tokens < PrefillAttentionMinimumTokens) return false;
        if (PrefillAttentionProducts && _blas is not null)
        {
            PrefillAttentionOnProducts(queries, keys, values, output, cache, shape, firstPosition, tokens);
            return true;
        }
        if (shape.ValueDim > 512) return false;
        // MLA's latent cache keeps each value row at the start of its key row: one tile then holds both.
        bool valuesInKeys = values == keys && cache.ValueStride == cache.KeyWidth && shape.ValueDim <= shape.KeyDim && shape.KvHeads == 1;
        long sharedBytes = sizeof(float) * ((long)PrefillKeys * (shape.KeyDim + 1) + (valuesInKeys ? 0 : (long)PrefillKeys * shape.ValueDim)
            + (long)PrefillWarps * shape.KeyDim);
        // Each lane holds value dims lane + 32·i: 4, 8 or 16 of them.
        string name = shape.ValueDim <= 128 ? "attention_prefill_4" : shape.ValueDim <= 256 ? "attention_prefill_8" : "attention_prefill_16";
        IntPtr function = _kernels.Function(name);
        if (!_prefillSharedBytes.TryGetValue(function, out int allowed)) allowed = 48 * 1024;
        if (sharedBytes > allowed)
        {
            int optIn = _context.Driver.Attribute(_context.Driver.Device(Device.Ordinal), DeviceAttribute.MaxSharedMemoryPerBlockOptin);
            if (sharedBytes > optIn) return false;
            _context.Driver.SetMaxDynamicSharedBytes(function, (int)sharedBytes);
            _prefillSharedBytes[function] = (int)sharedBytes;
        }
        long queryCount = (long)tokens * (shape.Heads / shape.KvHeads);
        new KernelArguments().Pointer(queries).Pointer(keys).Pointer(values).Pointer(output)
            .Int(shape.Heads).Int(shape.KvHeads).Int(shape.KeyDim).Int(shape.ValueDim).Int(cache.KeyWidth).Int(cache.ValueStride)
            .Float(shape.Scale).Int(firstPosition).Int(tokens).Int(valuesInKeys ? 1 : 0)
            .Launch(_context, function, name, (uint)((queryCount + PrefillWarps - 1) / PrefillWarps), (uint)shape.KvHeads, PrefillThreads, (uint)sharedBytes);
        return true;
    }

    /// <summary>
    /// A prompt batch's attention as matrix products, in chunks of consecutive tokens (at most
    /// <see cref="PrefillScoreBytesLimit"/> bytes of scores, about <see cref="PrefillAttentionPlan.ChunkRows"/> rows). Per chunk, with
    /// rows r = (token, head) as the queries and the output lay them out and <c>width</c> the positions the chunk's last
    /// token sees: the scores <c>S[r, p] = scale · q_r · k_p</c> (cuBLAS, FP32 or 3×TF32: <see cref="PrefillTensorCores"/>),
    /// <c>prefill_softmax</c> in place (the causal mask: positions a row cannot see become 0), then
    /// <c>O[r] = Σ_p S[r, p] · v_p</c> (cuBLAS likewise). The
    /// heads sharing one cache head (all of them for MLA's latent cache and multi-query attention) are one product over
    /// all their rows when there is a single cache head; otherwise strided batches, looping over whichever of the group
    /// size and the cache heads is smaller. Value rows inside the key rows (MLA) need no special case: the value
    /// product reads <c>value_dim</c> floats of every <c>value_stride</c>.
    /// </summary>
    private void PrefillAttentionOnProducts(ulong queries, ulong keys, ulong values, ulong output, KvLayerCache cache, in AttentionShape shape, int firstPosition, int tokens)
    {
        int heads = shape.Heads, kvHeads = shape.KvHeads, group = heads / kvHeads, keyDim = shape.KeyDim, valueDim = shape.ValueDim;
        int keyStride = cache.KeyWidth, valueStride = cache.ValueStride, length = firstPosition + tokens;
        bool sharedRows = values == keys && valueStride == keyStride; // MLA: the values are the key rows' first value_dim
        var plan = PrefillAttentionPlan.For(heads, keyDim, keyStride, sharedRows ? 0 : valueStride, length, tokens, PrefillScoreBytesLimit);
        int chunkTokens = plan.ChunkTokens;
        ulong s = _scores.Get(plan.ScoreBytes).Pointer;

        // Operands as (hi, lo) pairs; lo = 0: FP32 products of hi alone.
        (ulong Hi, ulong Lo) k = (keys, 0), v = (values, 0);
        ulong queryHi = 0, queryLo = 0, scoreLo = 0;
        bool split = PrefillTensorCores == true;
        if (split)
        {
            // One scratch, carved: the cached keys' hi and lo, the values' unless they sit in the key rows, the chunk's queries', the probabilities' lo.
            long keyBytes = plan.KeyBytes, valueBytes = plan.ValueBytes, queryBytes = plan.QueryBytes;
            ulong scratch = (_prefillSplitScratch ??= new DeviceScratch(_context, _retirement)).Get(plan.SplitBytes).Pointer;
            k = (scratch, scratch + (ulong)keyBytes);
            SplitTf32(keys, keyStride, k.Hi, k.Lo, keyStride, length);
            if (sharedRows) v = k;
            else
            {
                v = (scratch + 2 * (ulong)keyBytes, scratch + 2 * (ulong)keyBytes + (ulong)valueBytes);
                SplitTf32(values, valueStride, v.Hi, v.Lo, valueStride, length);
            }
            queryHi = scratch + 2 * (ulong)(keyBytes + valueBytes);
            queryLo = queryHi + (ulong)queryBytes;
            scoreLo = queryLo + (ulong)queryBytes;
        }

        IntPtr softmax = _kernels.Function("prefill_softmax");
        for (int firstToken = 0; firstToken < tokens; firstToken += chunkTokens)
        {
            int count = Math.Min(chunkTokens, tokens - firstToken);
            int width = firstPosition + firstToken + count;
            int rowStride = (int)PrefillAttentionPlan.RowFloats(width);
            (ulong Hi, ulong Lo) q = (queries + (ulong)firstToken * (ulong)heads * (ulong)keyDim * sizeof(float), 0);
            if (split)
            {
                SplitTf32(q.Hi, (long)count * heads * keyDim, queryHi, queryLo, count * heads * keyDim, 1);
                q = (queryHi, queryLo);
            }
            ulong o = output + (ulong)firstToken * (ulong)heads * (ulong)valueDim * sizeof(float);
            // Scores: column-major C (width × rows, ldc = rowStride) = Kᵀ·Q, K being keyDim × width (ld keyStride).
            if (kvHeads == 1)
                AttentionProduct(true, width, count * heads, keyDim, shape.Scale, k, 0, keyStride, 0, q, 0, keyDim, 0, s, rowStride, 0, 1);
            else
                for (int call = 0; call < Math.Min(group, kvHeads); call++)
                {
                    (long kOffset, long kStride, long qOffset, long qStride, long sOffset, long sStride, int batch) = HeadBatch(group, kvHeads, keyDim, rowStride, call);
                    AttentionProduct(true, width, count, keyDim, shape.Scale, k, kOffset, keyStride, kStride, q, qOffset, heads * keyDim, qStride,
                        s + (ulong)sOffset * sizeof(float), heads * rowStride, sStride, batch);
                }
            new KernelArguments().Pointer(s).Pointer(scoreLo).Int(rowStride).Int(heads).Int(firstPosition).Int(firstToken).Int(width)
                .Launch(_context, softmax, "prefill_softmax", (uint)(count * heads), 1, PrefillSoftmaxThreads);
            (ulong Hi, ulong Lo) p = (s, scoreLo);
            // Outputs: column-major C (valueDim × rows, ldc = valueDim) = V·P, V being valueDim × width (ld valueStride).
            if (kvHeads == 1)
                AttentionProduct(false, valueDim, count * heads, width, 1f, v, 0, valueStride, 0, p, 0, rowStride, 0, o, valueDim, 0, 1);
            else
                for (int call = 0; call < Math.Min(group, kvHeads); call++)
                {
                    // Here the per-head operand of the batch is the output, and the probabilities are the score rows.
                    (long vOffset, long vStride, long oOffset, long oStride, long pOffset, long pStride, int batch) = HeadBatch(group, kvHeads, valueDim, rowStride, call);
                    AttentionProduct(false, valueDim, count, width, 1f, v, vOffset, valueStride, vStride, p, pOffset, heads * rowStride, pStride,
                        o + (ulong)oOffset * sizeof(float), heads * valueDim, oStride, batch);
                }
        }
    }

    /// <summary>
    /// The split scratch of a 3×TF32 prompt attention (<see cref="PrefillTensorCores"/>) over
    /// <paramref name="contextSize"/> positions, for the placement's reserve (the scores themselves are in
    /// DeviceMemoryReserve's count): hi and lo of the cached key rows (and of the value rows unless they sit in them),
    /// of one chunk's queries, and the chunk's probabilities' lo, with chunks as <see cref="PrefillAttentionOnProducts"/>
    /// cuts a batch of up to DeviceMemoryReserve.PromptBatch tokens. 0 when the products would not be split.
    /// </summary>
    internal long PrefillSplitReserveBytes(Models.ModelHyperparameters config, int contextSize)
    {
        ArgumentNullException.ThrowIfNull(config);
        int heads = config.HeadCount;
        if (!PrefillAttention || !PrefillAttentionProducts || PrefillTensorCores != true || heads <= 0 || contextSize <= 0) return 0;
        int keyDim = config.Mla is { } mla ? mla.KvLoraRank + mla.QkRopeHeadDim : config.KeyLength;
        int keyWidth = config.Mla is not null ? keyDim : config.HeadCountKv * config.KeyLength;
        int valueWidth = config.Mla is not null ? 0 : config.HeadCountKv * config.ValueLength;
        return PrefillAttentionPlan.MostSplitBytes(heads, keyDim, keyWidth, valueWidth, contextSize,
            Math.Min(contextSize, Models.Placement.DeviceMemoryReserve.PromptBatch), PrefillScoreBytesLimit);
    }

    /// <summary>split_tf32 over <paramref name="rows"/> rows of <paramref name="width"/> floats, <paramref name="sourceStride"/> apart, into packed hi and lo rows.</summary>
    private void SplitTf32(ulong source, long sourceStride, ulong hi, ulong lo, int width, long rows)
    {
        new KernelArguments().Pointer(source).Long(sourceStride).Pointer(hi).Pointer(lo).Int(width).Long(rows)
            .Launch(_context, _kernels.Function("split_tf32"), "split_tf32", Blocks(width, ElementThreads), (uint)Math.Min(rows, MaxGridRows), ElementThreads);
    }

    /// <summary>
    /// One strided batched product of the prompt attention, <c>C = alpha · op(A) · B</c> in cuBLAS's column-major terms,
    /// offsets in floats: FP32 on <paramref name="a"/>.Hi and <paramref name="b"/>.Hi when there are no lo terms, else
    /// 3×TF32, the small terms first (lo·hi, hi·lo, then hi·hi added).
    /// </summary>
    private void AttentionProduct(bool transposeA, int m, int n, int depth, float alpha, (ulong Hi, ulong Lo) a, long aOffset, int lda, long strideA,
        (ulong Hi, ulong Lo) b, long bOffset, int ldb, long strideB, ulong c, int ldc, long strideC, int batch)
    {
        ulong aHi = a.Hi + (ulong)aOffset * sizeof(float), bHi = b.Hi + (ulong)bOffset * sizeof(float);
        if (a.Lo == 0 || b.Lo == 0)
        {
            _blas!.GemmFloatBatched(_blasHandle, transposeA, false, m, n, depth, alpha, aHi, lda, strideA, bHi, ldb, strideB, c, ldc, strideC, batch);
            return;
        }
        ulong aLo = a.Lo + (ulong)aOffset * sizeof(float), bLo = b.Lo + (ulong)bOffset * sizeof(float);
        _blas!.GemmTf32Batched(_blasHandle, transposeA, false, m, n, depth, alpha, aLo, lda, strideA, bHi, ldb, strideB, c, ldc, strideC, batch, accumulate: false);
        _blas.GemmTf32Batched(_blasHandle, transposeA, false, m, n, depth, alpha, aHi, lda, strideA, bLo, ldb, strideB, c, ldc, strideC, batch, accumulate: true);
        _blas.GemmTf32Batched(_blasHandle, transposeA, false, m, n, depth, alpha, aHi, lda, strideA, bHi, ldb, strideB, c, ldc, strideC, batch, accumulate: true);
    }

    /// <summary>
    /// Call <paramref name="call"/> of the Math.Min(group, kvHeads) strided batches that cover every head
    /// h = kvHead · group + j of a grouped-query product: looping over the group with a batch per cache head, or over the
    /// cache heads with a batch per group member, whichever needs fewer calls. The cache operand is
    /// <paramref name="dim"/> floats wide per cache head, the per-head operand (queries, or outputs) <paramref name="dim"/>
    /// per head, the score rows <paramref name="rowStride"/> per head; returned are each one's offset and batch stride in
    /// floats, and the batch size.
    /// </summary>
    private static (long CacheOffset, long CacheStride, long HeadOffset, long HeadStride, long RowOffset, long RowStride, int Batch) HeadBatch(
        int group, int kvHeads, int dim, int rowStride, int call) =>
        group <= kvHeads
            ? (0, dim, (long)call * dim, (long)group * dim, (long)call * rowStride, (long)group * rowStride, kvHeads)
            : ((long)call * dim, 0, (long)call * group * dim, dim, (long)call * group * rowStride, rowStride, group);

    private void DisposePrompt()
    {
        _halfActivationScratch?.Dispose();
        _halfWeightScratch?.Dispose();
        _codeScratch?.Dispose();
        _codeSumScratch?.Dispose();
        _prefillSplitScratch?.Dispose();
    }
}
