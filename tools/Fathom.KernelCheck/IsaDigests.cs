using System.Security.Cryptography;
using Fathom.Quants;

namespace Fathom.KernelCheck;

/// <summary>
/// Digests of the operations that must give the same bits whatever the CPU's instruction sets: dequantization,
/// activation encoding and weight quantization of fixed pseudo-random rows, per type. Run the checker with and
/// without the JIT's wider instruction sets (e.g. <c>DOTNET_EnableAVX512F=0</c>, <c>DOTNET_EnableHWIntrinsic=0</c>) and
/// compare the lines: a difference names the type and the operation whose SIMD code depends on the CPU.
/// </summary>
public static class IsaDigests
{
    private const int Columns = 4096, DequantizeRows = 64, QuantizeRows = 4;

    public static void Write(IEnumerable<WeightFormat> formats, TextWriter output)
    {
        output.WriteLine("Digests (SHA-256, first 16 hex digits) of fixed pseudo-random rows:");
        output.WriteLine($"{"Type",-9} | {"dequantize",-16} | {"encode activations",-18} | {"quantize weights",-16}");
        foreach (WeightFormat format in formats)
        {
            output.WriteLine($"{format.Type,-9} | {Dequantized(format),-16} | {Encoded(format),-18} | {Quantized(format),-16}");
        }
    }

    /// <summary>Random block bytes (so every bit pattern of codes and scales occurs), decoded; NaNs made canonical.</summary>
    private static string Dequantized(WeightFormat format)
    {
        int rowBytes = checked((int)format.Layout.RowBytes(Columns));
        var random = new Random(1000 + (int)format.Type);
        byte[] row = new byte[rowBytes];
        float[] values = new float[Columns];
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (int r = 0; r < DequantizeRows; r++)
        {
            random.NextBytes(row);
            format.Dequantize(row, values);
            for (int i = 0; i < values.Length; i++) if (float.IsNaN(values[i])) values[i] = float.NaN;
            hash.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        }
        return Hex(hash);
    }

    private static string Encoded(WeightFormat format)
    {
        WeightFormat activation = TypeTraits.For(format.DotActivationType);
        return QuantizedWith(activation, importance: false, seed: 2000 + (int)format.Type);
    }

    private static string Quantized(WeightFormat format) =>
        QuantizedWith(format, format.RequiresImportance, seed: 3000 + (int)format.Type);

    private static string QuantizedWith(WeightFormat format, bool importance, int seed)
    {
        var random = new Random(seed);
        float[] values = new float[Columns];
        float[] weights = importance ? new float[Columns] : [];
        byte[] blocks = new byte[checked((int)format.Layout.RowBytes(Columns))];
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (int r = 0; r < QuantizeRows; r++)
        {
            for (int i = 0; i < Columns; i++)
            {
                // Gaussian values with a few large outliers, as in real weight rows and activations.
                double u = 1 - random.NextDouble(), v = random.NextDouble();
                double g = Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * v);
                values[i] = (float)(random.Next(64) == 0 ? 8 * g : g);
            }
            for (int i = 0; i < weights.Length; i++) weights[i] = (float)(0.1 + random.NextDouble());
            format.Quantize(values, blocks, weights);
            hash.AppendData(blocks);
        }
        return Hex(hash);
    }

    private static string Hex(IncrementalHash hash) => Convert.ToHexString(hash.GetHashAndReset())[..16].ToLowerInvariant();
}
