using System.Runtime.InteropServices;
using Fathom.Quants;
using Fathom.Tests.Reference;

namespace Fathom.Benchmarks;

/// <summary>
/// One matrix product computed by ggml itself (ggml_mul_mat through ggml's graph API and libggml-cpu's scheduler),
/// as llama.cpp computes every weight × batch product: the peer number for Fathom's batched MatMul. The context
/// holds the weight (in its own type), the F32 activations and the F32 result; ggml quantizes the activations to
/// the type's vec_dot_type inside the product, as Fathom does.
/// </summary>
internal sealed unsafe class GgmlMatMul : IDisposable
{
    [StructLayout(LayoutKind.Sequential)]
    private struct InitParams
    {
        public nuint MemSize;
        public void* MemBuffer;
        public byte NoAlloc; // C bool
    }

    private static readonly delegate* unmanaged<InitParams, nint> Init = (delegate* unmanaged<InitParams, nint>)GgmlLibrary.BaseExport("ggml_init");
    private static readonly delegate* unmanaged<nint, void> Free = (delegate* unmanaged<nint, void>)GgmlLibrary.BaseExport("ggml_free");
    private static readonly delegate* unmanaged<nint, int, long, long, nint> NewTensor2d = (delegate* unmanaged<nint, int, long, long, nint>)GgmlLibrary.BaseExport("ggml_new_tensor_2d");
    private static readonly delegate* unmanaged<nint, void*> GetData = (delegate* unmanaged<nint, void*>)GgmlLibrary.BaseExport("ggml_get_data");
    private static readonly delegate* unmanaged<nint, nint, nint, nint> MulMat = (delegate* unmanaged<nint, nint, nint, nint>)GgmlLibrary.BaseExport("ggml_mul_mat");
    private static readonly delegate* unmanaged<nint, nint> NewGraph = (delegate* unmanaged<nint, nint>)GgmlLibrary.BaseExport("ggml_new_graph");
    private static readonly delegate* unmanaged<nint, nint, void> BuildForward = (delegate* unmanaged<nint, nint, void>)GgmlLibrary.BaseExport("ggml_build_forward_expand");
    private static readonly delegate* unmanaged<nint, nint, int, int> ComputeWithContext = (delegate* unmanaged<nint, nint, int, int>)GgmlLibrary.CpuExport("ggml_graph_compute_with_ctx");

    private readonly nint _context;
    private readonly nint _graph;
    private readonly nint _activations;
    private readonly nint _result;
    private readonly int _threads;

    /// <param name="weights">rows × columns in <paramref name="type"/>, row after row (ggml's layout).</param>
    public GgmlMatMul(GgmlType type, ReadOnlySpan<byte> weights, int rows, int columns, int tokens, int threads)
    {
        GgmlQuants.DotActivationType(type); // runs ggml_cpu_init once
        long weightBytes = GgmlTypes.Layout(type).RowBytes(columns) * rows;
        // Tensors plus room for the graph and for the work buffer ggml_graph_compute_with_ctx takes from the context.
        long size = weightBytes + 2L * tokens * columns * sizeof(float) + (long)tokens * rows * sizeof(float) + (64L << 20);
        _context = Init(new InitParams { MemSize = (nuint)size, MemBuffer = null, NoAlloc = 0 });
        if (_context == 0) throw new InvalidOperationException("ggml_init failed");
        nint weight = NewTensor2d(_context, (int)type, columns, rows);
        weights[..(int)weightBytes].CopyTo(new Span<byte>(GetData(weight), (int)weightBytes));
        _activations = NewTensor2d(_context, (int)GgmlType.F32, columns, tokens);
        _result = MulMat(_context, weight, _activations);
        _graph = NewGraph(_context);
        BuildForward(_graph, _result);
        _threads = threads;
    }

    /// <summary>The F32 input, tokens × columns.</summary>
    public Span<float> Input => new(GetData(_activations), InputLength);

    private int InputLength => checked((int)(GgmlTensorElements(_activations)));

    /// <summary>The F32 result, tokens × rows (token-major, as Fathom's MatMul writes it).</summary>
    public ReadOnlySpan<float> Output => new(GetData(_result), checked((int)GgmlTensorElements(_result)));

    public void Compute()
    {
        int status = ComputeWithContext(_context, _graph, _threads);
        if (status != 0) throw new InvalidOperationException($"ggml_graph_compute_with_ctx returned {status}");
    }

    private static readonly delegate* unmanaged<nint, long> Elements = (delegate* unmanaged<nint, long>)GgmlLibrary.BaseExport("ggml_nelements");

    private static long GgmlTensorElements(nint tensor) => Elements(tensor);

    public void Dispose() => Free(_context);
}
