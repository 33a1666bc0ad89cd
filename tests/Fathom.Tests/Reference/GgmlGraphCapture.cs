using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Fathom.Quants;
using Fathom.Tests.Models;

namespace Fathom.Tests.Reference;

/// <summary>
/// One node of a llama.cpp graph as it was computed: its name, operation, shape, a copy of its F32 values (taken at
/// the moment ggml computed it, before the allocator could reuse the memory) and its sources.
/// </summary>
public sealed class GgmlNode
{
    public required nint Address { get; init; }
    public required string Name { get; init; }
    public required string Operation { get; init; }
    public required GgmlType Type { get; init; }
    public required long[] Shape { get; init; }
    /// <summary>The values in ggml's element order (dimension 0 fastest), or null when the node is not F32.</summary>
    public required float[]? Values { get; init; }
    /// <summary>The sources' tensor addresses (0 where unused).</summary>
    public required nint[] Sources { get; init; }
    public required string[] SourceNames { get; init; }
    /// <summary>Each source's values as they were when this node was computed (null for unused slots and quantized types).</summary>
    public required float[]?[] SourceValues { get; init; }
    /// <summary>Each source's shape (null for unused slots).</summary>
    public required long[]?[] SourceShapes { get; init; }
    /// <summary>The operation's parameters (ggml_tensor.op_params), as 32-bit words.</summary>
    public required int[] Parameters { get; init; }
}

/// <summary>
/// Runs llama.cpp on a token sequence (one batch, <see cref="LlamaCppReference"/>) and keeps every node of its graph:
/// op-by-op tests feed a node's recorded inputs to Fathom's operation and compare the outputs bit for bit.
/// </summary>
public static unsafe class GgmlGraphCapture
{
    private const int OpParamsOffset = 84, OpParamsWords = 16;
    private static readonly Lock Running = new();
    private static List<GgmlNode>? _nodes;
    private static Dictionary<nint, GgmlNode>? _byAddress;
    private static Exception? _error;

    /// <summary>The nodes in the order ggml computed them, and the logits of every position.</summary>
    public static (List<GgmlNode> Nodes, float[][] Logits) Run(string path, IReadOnlyList<int> tokens)
    {
        lock (Running)
        {
            (_nodes, _byAddress, _error) = ([], [], null);
            try
            {
                float[][] logits = LlamaCppReference.Logits(path, tokens, (nint)(delegate* unmanaged[Cdecl]<nint, byte, nint, byte>)&OnNode);
                if (_error is not null) throw new InvalidOperationException("capturing a llama.cpp node failed", _error);
                return (_nodes, logits);
            }
            finally
            {
                (_nodes, _byAddress) = (null, null);
            }
        }
    }

    /// <summary>Values of any tensor (node or leaf) in ggml's element order, read now (weights, cache views).</summary>
    public static float[] Read(GgmlTensorView t)
    {
        long n0 = t.Ne(0), n1 = t.Ne(1), n2 = t.Ne(2), n3 = t.Ne(3);
        var values = new float[checked(n0 * n1 * n2 * n3)];
        long i = 0;
        for (long i3 = 0; i3 < n3; i3++)
            for (long i2 = 0; i2 < n2; i2++)
                for (long i1 = 0; i1 < n1; i1++)
                    for (long i0 = 0; i0 < n0; i0++)
                        values[i++] = t.Get(i0, i1, i2, i3);
        return values;
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static byte OnNode(nint tensor, byte ask, nint userData)
    {
        if (ask != 0) return 1;
        try
        {
            var view = new GgmlTensorView(tensor);
            view.Check();
            var sources = new nint[10];
            var names = new string[10];
            var values = new float[]?[10];
            var shapes = new long[]?[10];
            for (int s = 0; s < 10; s++)
            {
                GgmlTensorView src = view.Source(s);
                sources[s] = src.IsNull ? 0 : *(nint*)(tensor + 152 + 8 * s);
                names[s] = src.IsNull ? "" : src.Name;
                if (src.IsNull) continue;
                shapes[s] = [src.Ne(0), src.Ne(1), src.Ne(2), src.Ne(3)];
                if (src.Type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.I32) values[s] = Read(src);
            }
            var parameters = new int[OpParamsWords];
            for (int p = 0; p < OpParamsWords; p++) parameters[p] = *(int*)(tensor + OpParamsOffset + 4 * p);
            var node = new GgmlNode
            {
                Address = tensor,
                Name = view.Name,
                Operation = view.Operation,
                Type = view.Type,
                Shape = [view.Ne(0), view.Ne(1), view.Ne(2), view.Ne(3)],
                Values = view.Type is GgmlType.F32 or GgmlType.I32 ? Read(view) : null,
                Sources = sources,
                SourceNames = names,
                SourceValues = values,
                SourceShapes = shapes,
                Parameters = parameters,
            };
            _nodes!.Add(node);
            _byAddress![tensor] = node;
        }
        catch (Exception e)
        {
            _error ??= e;
        }
        return 1;
    }
}
