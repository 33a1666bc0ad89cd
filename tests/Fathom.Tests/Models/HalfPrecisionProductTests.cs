using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;
using Fathom.Tests.Reference;
using Xunit.Abstractions;

namespace Fathom.Tests.Models;

/// <summary>
/// Every matrix product llama.cpp computes for an F16 or BF16 DeepSeek model (attention projections, MLA's absorbed
/// <c>k_b</c> and <c>v_b</c> products, dense and shared-expert feed-forwards, routed experts, the F32 router, output) is
/// taken from its graph as it runs, with its inputs, and recomputed by Fathom's <see cref="CpuBackend.MatMul"/> from the
/// same weights in the file, one token at a time and as one batch: against ggml's AVX2 build the results are equal bit
/// for bit (<c>MUL_MAT</c> adds in llamafile's tinyBLAS order, <c>MUL_MAT_ID</c> in ggml_vec_dot's,
/// <see cref="DotOrder"/>), against another build to float rounding. Products over half-precision weights also differ
/// clearly from exact products over unrounded inputs, so both engines round activations to the weight's format before
/// the dot (ggml's <c>vec_dot_type</c>), and this check would see it if one did not.
/// </summary>
public sealed unsafe class HalfPrecisionProductTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-6;
    private static readonly Lock Running = new();

    // State of the callback that llama.cpp calls during one decode (one test at a time, under Running).
    private static GgufFile? _file;
    private static CpuBackend? _backend;
    private static readonly List<ProductCheck> Checks = [];
    private static Exception? _error;

    private sealed record ProductCheck(string Node, string Weight, GgmlType Type, double ToFathom, double ToUnrounded, long Differing, long Values);

    [Theory]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    public void EveryLlamaCppProductEqualsFathomsOnTheSameInputs(GgmlType type)
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("deepseek2-v3") with { DefaultType = type };
        string path = ModelTestKit.Synthesize(spec);
        List<ProductCheck> checks;
        string[] matrices;
        try
        {
            lock (Running)
            {
                using GgufFile file = GgufFile.Open(path);
                matrices = [.. file.Tensors.Where(t => t.Dimensions >= 2 && t.Name != "token_embd.weight").Select(t => t.Name)];
                using var backend = new CpuBackend(1);
                (_file, _backend, _error) = (file, backend, null);
                Checks.Clear();
                try
                {
                    LlamaCppReference.Logits(path, ModelTestKit.Prompt(spec.VocabSize, 8, spec.Seed), (nint)(delegate* unmanaged[Cdecl]<nint, byte, nint, byte>)&OnNode);
                }
                finally
                {
                    (_file, _backend) = (null, null);
                }
                if (_error is not null) throw new InvalidOperationException("checking a llama.cpp product failed", _error);
                checks = [.. Checks];
            }
        }
        finally
        {
            File.Delete(path);
        }

        foreach (ProductCheck c in checks)
            output.WriteLine($"{c.Node,-20} {c.Weight,-28} {c.Type,-5} Fathom {c.ToFathom:E2} ({c.Differing} of {c.Values} values differ)  exact unrounded {c.ToUnrounded:E2}");
        // Every weight matrix of the file except the embedding (a row lookup) took part in some product.
        Assert.Equal(matrices.Order(), checks.Select(c => c.Weight).Distinct().Order());
        bool exact = GgmlLibrary.IsAvx2Build;
        foreach (ProductCheck c in checks)
        {
            Assert.True(c.ToFathom <= Tolerance, $"{c.Node} ({c.Weight}): llama.cpp's product differs from Fathom's by {c.ToFathom:E2} relative L2");
            if (exact) Assert.True(c.Differing == 0, $"{c.Node} ({c.Weight}): {c.Differing} of {c.Values} values differ from ggml's in some bit");
            if (c.Type == type)
                Assert.True(c.ToUnrounded > 100 * Tolerance, $"{c.Node} ({c.Weight}): indistinguishable from a product over unrounded activations ({c.ToUnrounded:E2})");
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static byte OnNode(nint tensor, byte ask, nint userData)
    {
        if (ask != 0) return 1; // ask for every node's data
        try
        {
            var node = new GgmlTensorView(tensor);
            string op = node.Operation;
            if (op is "MUL_MAT" or "MUL_MAT_ID") Check(node, op == "MUL_MAT_ID");
        }
        catch (Exception e)
        {
            _error ??= e;
        }
        return 1;
    }

    /// <summary>
    /// Recomputes one product node from its inputs with Fathom and records how far llama.cpp's result is, and how many
    /// of its values differ in any bit: one token at a time (decoding) and, for <c>MUL_MAT</c>, every token of the
    /// node in one batch (prompts). Routed experts are multiplied in ggml's <c>MUL_MAT_ID</c> order, as the model does.
    /// </summary>
    private static void Check(GgmlTensorView node, bool byExpert)
    {
        node.Check();
        GgmlTensorView weight = node.Source(0), input = node.Source(1);
        // Products of two activations (attention scores over the cache) have no weight in the file.
        if (!_file!.TryGetTensor(weight.Name, out GgufTensorInfo? info)) return;
        if (input.Type != GgmlType.F32 || node.Type != GgmlType.F32) throw new InvalidOperationException($"{node.Name}: inputs of type {input.Type}");
        int k = checked((int)weight.Ne(0)), rows = checked((int)weight.Ne(1));
        long sliceBytes = rows * TypeTraits.For(info.Type).Layout.RowBytes(k);
        byte* data = _file.GetTensorPointer(info);
        DotOrder order = byExpert ? DotOrder.GgmlVecDot : DotOrder.LlamafileGemm;

        var x = new float[k];
        var y = new float[rows];
        var w = new float[k];
        double toFathom = 0, toUnrounded = 0, norm = 0;
        long differing = 0, values = 0;
        WeightMatrix Matrix(long slice) => WeightMatrix.InPlace(info.Name, info.Type, data + slice * sliceBytes, rows, k).WithDotOrder(order);
        void Compare(long slice, Func<long, float> llama)
        {
            WeightMatrix matrix = Matrix(slice);
            _backend!.MatMul(matrix, x, y, 1);
            for (int r = 0; r < rows; r++)
            {
                matrix.DequantizeRow(r, w);
                double exact = 0;
                for (int i = 0; i < k; i++) exact += (double)w[i] * x[i];
                float l = llama(r);
                toFathom += ((double)l - y[r]) * ((double)l - y[r]);
                toUnrounded += (l - exact) * (l - exact);
                norm += (double)y[r] * y[r];
                if (BitConverter.SingleToInt32Bits(l) != BitConverter.SingleToInt32Bits(y[r])) differing++;
                values++;
            }
        }

        if (byExpert)
        {
            // dst[:, slot, token] = expert ids[slot, token] · input[:, slot % ne1, token]
            GgmlTensorView ids = node.Source(2);
            for (long token = 0; token < node.Ne(2); token++)
                for (long slot = 0; slot < node.Ne(1); slot++)
                {
                    for (int i = 0; i < k; i++) x[i] = input.Get(i, slot % input.Ne(1), token);
                    Compare((long)ids.Get(slot, token), r => node.Get(r, slot, token));
                }
        }
        else
        {
            // dst[:, j, i2, i3] = weight[:, :, i2 / r2, i3 / r3] · input[:, j, i2, i3] (weights broadcast over heads)
            long r2 = input.Ne(2) / weight.Ne(2), r3 = input.Ne(3) / weight.Ne(3);
            int tokens = checked((int)node.Ne(1));
            var batch = new float[tokens * k];
            var batchOut = new float[tokens * rows];
            for (long i3 = 0; i3 < node.Ne(3); i3++)
                for (long i2 = 0; i2 < node.Ne(2); i2++)
                {
                    for (long j = 0; j < tokens; j++)
                    {
                        for (int i = 0; i < k; i++) batch[j * k + i] = x[i] = input.Get(i, j, i2, i3);
                        Compare(i3 / r3 * weight.Ne(2) + i2 / r2, r => node.Get(r, j, i2, i3));
                    }
                    // The same products as one batch (the tile kernels) must give the same bits.
                    _backend!.MatMul(Matrix(i3 / r3 * weight.Ne(2) + i2 / r2), batch, batchOut, tokens);
                    for (long j = 0; j < tokens; j++)
                        for (int r = 0; r < rows; r++)
                            if (BitConverter.SingleToInt32Bits(node.Get(r, j, i2, i3)) != BitConverter.SingleToInt32Bits(batchOut[j * rows + r])) differing++;
                }
        }
        Checks.Add(new ProductCheck(node.Name, info.Name, info.Type, Math.Sqrt(toFathom / norm), Math.Sqrt(toUnrounded / norm), differing, values));
    }
}
