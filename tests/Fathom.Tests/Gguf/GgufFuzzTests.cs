using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Tests.Gguf;

/// <summary>
/// Mutation fuzzing of the reader, in memory, with a fixed seed: truncations, bit flips, bytes and 64-bit fields
/// overwritten with extreme values, inserted and deleted runs. Every case must parse or throw GgufFormatException;
/// a parsed file must keep every tensor inside the buffer.
/// </summary>
public sealed class GgufFuzzTests
{
    private const int Cases = 100_000;

    private static readonly long[] ExtremeWords =
    [
        0, 1, -1, long.MaxValue, long.MinValue, int.MaxValue, uint.MaxValue, 1L << 31, 1L << 32, 1L << 62,
        (long)GgufLimits.MaxStringLength + 1, 0x7FFF_FFFF_FFFF_FFF0,
    ];

    private static readonly byte[] ExtremeBytes = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0x0D, 0x09];

    [Fact]
    public void MutatedFilesParseOrFailWithFormatException()
    {
        byte[][] seeds = Seeds();
        var random = new Random(20261128);
        var failures = new List<string>();
        int parsed = 0;
        for (int i = 0; i < Cases && failures.Count < 5; i++)
        {
            byte[] seed = seeds[i % seeds.Length];
            (byte[] mutant, string how) = Mutate(seed, random);
            try
            {
                using GgufFile file = GgufFile.Parse(mutant, "fuzz");
                Touch(file, mutant.Length);
                parsed++;
            }
            catch (GgufFormatException)
            {
            }
            catch (Exception e)
            {
                failures.Add($"case {i} (seed {i % seeds.Length}, {how}): {e.GetType().Name}: {e.Message}");
            }
        }
        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
        Assert.InRange(parsed, 1, Cases - 1); // both outcomes occur, or the fuzzer is not exercising the reader
    }

    private static void Touch(GgufFile file, int bufferLength)
    {
        foreach (var (_, value) in file.Metadata) _ = value.ToString();
        foreach (GgufTensorInfo t in file.Tensors)
        {
            if (t.DataOffset < 0 || t.DataOffset + t.ByteSize > bufferLength)
                throw new InvalidOperationException($"tensor {t.Name} at {t.DataOffset}+{t.ByteSize} lies outside the {bufferLength}-byte buffer");
            ReadOnlySpan<byte> data = file.GetTensorData(t);
            _ = data[0] ^ data[^1];
        }
    }

    private static (byte[] Mutant, string How) Mutate(byte[] seed, Random random)
    {
        byte[] m = (byte[])seed.Clone();
        switch (random.Next(6))
        {
            case 0:
            {
                int length = random.Next(m.Length);
                return (m[..length], $"truncated to {length}");
            }
            case 1:
            {
                int flips = random.Next(1, 9);
                for (int k = 0; k < flips; k++) m[random.Next(m.Length)] ^= (byte)(1 << random.Next(8));
                return (m, $"{flips} bit flips");
            }
            case 2:
            {
                int n = random.Next(1, 5);
                for (int k = 0; k < n; k++) m[random.Next(m.Length)] = ExtremeBytes[random.Next(ExtremeBytes.Length)];
                return (m, $"{n} bytes overwritten");
            }
            case 3:
            {
                // Counts and lengths: the header's two counts, or any 8 bytes in the metadata and tensor table.
                int at = random.Next(4) == 0 ? (random.Next(2) == 0 ? 8 : 16) : random.Next(Math.Min(m.Length, 1024) - 8);
                long word = random.Next(3) == 0 ? random.NextInt64() : ExtremeWords[random.Next(ExtremeWords.Length)];
                BitConverter.TryWriteBytes(m.AsSpan(at, 8), word);
                return (m, $"word {word} at {at}");
            }
            case 4:
            {
                int at = random.Next(m.Length), n = random.Next(1, 16);
                var inserted = new byte[n];
                random.NextBytes(inserted);
                return ([.. m[..at], .. inserted, .. m[at..]], $"{n} bytes inserted at {at}");
            }
            default:
            {
                int at = random.Next(m.Length), n = Math.Min(random.Next(1, 16), m.Length - at);
                return ([.. m[..at], .. m[(at + n)..]], $"{n} bytes deleted at {at}");
            }
        }
    }

    private static byte[][] Seeds()
    {
        var everything = GgufSamples.Writer(GgufSamples.FlatMetadata().Concat(GgufSamples.NestedMetadata()), GgufSamples.Tensors());

        var tokenizerLike = new GgufWriter();
        tokenizerLike.Set(GgufKeys.General.Architecture, "deepseek2");
        tokenizerLike.Set(GgufKeys.Tokenizer.Tokens, GgufValue.FromArray(Enumerable.Range(0, 40).Select(i => $"tok{i}").ToArray()));
        tokenizerLike.Set(GgufKeys.Tokenizer.Scores, GgufValue.FromArray(Enumerable.Range(0, 40).Select(i => -i * 0.5f).ToArray()));
        tokenizerLike.Set(GgufKeys.Tokenizer.TokenType, GgufValue.FromArray(Enumerable.Range(0, 40).Select(i => i % 3).ToArray()));
        tokenizerLike.Set(GgufKeys.General.Alignment, GgufValue.FromUInt32(64));
        tokenizerLike.AddTensor("a", [32, 2], GgmlType.Q8_0, new byte[68]);
        tokenizerLike.AddTensor("b", [4], GgmlType.F32, new byte[16]);
        tokenizerLike.Version = 2;

        var tiny = new GgufWriter();
        tiny.Set("k", 1u);
        tiny.AddTensor("t", [2, 2], GgmlType.F16, new byte[8]);

        return [GgufSamples.Bytes(everything), GgufSamples.Bytes(tokenizerLike), GgufSamples.Bytes(tiny)];
    }
}
