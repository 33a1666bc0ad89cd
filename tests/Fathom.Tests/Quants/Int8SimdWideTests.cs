using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants;

namespace Fathom.Tests.Quants;

/// <summary>
/// The wide-instruction helpers against the instructions' definitions, element by element: on a CPU with AVX-512BW /
/// AVX-VNNI this tests the intrinsics, elsewhere the AVX2 stand-ins the wide kernels' tests rely on.
/// </summary>
public class Int8SimdWideTests
{
    private const int Trials = 200;

    [Avx2Fact]
    public void MultiplyAddAdjacent_Bytes_IsSaturatingPairSums()
    {
        var rng = new Random(1);
        for (int t = 0; t < Trials; t++)
        {
            byte[] u = Bytes(rng, 64);
            sbyte[] s = SBytes(rng, 64, full: true);
            short[] got = ToArray(Int8SimdWide.MultiplyAddAdjacent(Vector512.Create(u), Vector512.Create(s)));
            for (int i = 0; i < 32; i++)
                Assert.Equal((short)Math.Clamp(u[2 * i] * s[2 * i] + u[2 * i + 1] * s[2 * i + 1], short.MinValue, short.MaxValue), got[i]);
        }
    }

    [Avx2Fact]
    public void MultiplyAddAdjacent_Shorts_IsPairSums()
    {
        var rng = new Random(2);
        for (int t = 0; t < Trials; t++)
        {
            short[] a = Shorts(rng, 32), b = Shorts(rng, 32);
            int[] got = ToArray(Int8SimdWide.MultiplyAddAdjacent(Vector512.Create(a), Vector512.Create(b)));
            for (int i = 0; i < 16; i++)
                Assert.Equal(unchecked(a[2 * i] * b[2 * i] + a[2 * i + 1] * b[2 * i + 1]), got[i]);
        }
    }

    [Avx2Fact]
    public void ShuffleInLanes_PicksWithinEach128BitLane()
    {
        var rng = new Random(3);
        for (int t = 0; t < Trials; t++)
        {
            byte[] v = Bytes(rng, 64), control = Bytes(rng, 64);
            byte[] got = ToArray(Int8SimdWide.ShuffleInLanes(Vector512.Create(v), Vector512.Create(control)));
            for (int i = 0; i < 64; i++)
                Assert.Equal((control[i] & 0x80) != 0 ? (byte)0 : v[i / 16 * 16 + (control[i] & 15)], got[i]);
        }
    }

    [Avx2Fact]
    public void DotQuads_IsExactForActivationsInRange()
    {
        var rng = new Random(4);
        for (int t = 0; t < Trials; t++)
        {
            sbyte[] x = SBytes(rng, 64, full: true), y = SBytes(rng, 64, full: false);
            int[] got = ToArray(Int8SimdWide.DotQuads(Vector512.Create(x), Vector512.Create(y)));
            for (int i = 0; i < 16; i++) Assert.Equal(QuadSum(x, y, i), got[i]);
        }
    }

    [Avx2Fact]
    public void Vnni_DotQuads_IsExact()
    {
        var rng = new Random(5);
        for (int t = 0; t < Trials; t++)
        {
            byte[] u = Bytes(rng, 32);
            sbyte[] s = SBytes(rng, 32, full: true), x = SBytes(rng, 32, full: true), y = SBytes(rng, 32, full: false);
            int[] acc = [.. Enumerable.Range(0, 8).Select(_ => rng.Next(-1 << 20, 1 << 20))];
            int[] added = ToArray(Int8SimdWide.DotQuadsAddVnni(Vector256.Create(acc), Vector256.Create(u), Vector256.Create(s)));
            int[] signed = ToArray(Int8SimdWide.DotQuadsVnni(Vector256.Create(x), Vector256.Create(y)));
            for (int i = 0; i < 8; i++)
            {
                int expected = acc[i];
                for (int k = 4 * i; k < 4 * i + 4; k++) expected += u[k] * s[k];
                Assert.Equal(expected, added[i]);
                Assert.Equal(QuadSum(x, y, i), signed[i]);
            }
        }
    }

    private static int QuadSum(sbyte[] x, sbyte[] y, int quad)
    {
        int sum = 0;
        for (int k = 4 * quad; k < 4 * quad + 4; k++) sum += x[k] * y[k];
        return sum;
    }

    private static byte[] Bytes(Random rng, int n)
    {
        var b = new byte[n];
        rng.NextBytes(b);
        return b;
    }

    /// <summary>Random int8 values: the full range, or the activation range [−127, 127] the sign trick requires.</summary>
    private static sbyte[] SBytes(Random rng, int n, bool full) =>
        [.. Enumerable.Range(0, n).Select(_ => (sbyte)(full ? rng.Next(-128, 128) : rng.Next(-127, 128)))];

    private static short[] Shorts(Random rng, int n) => [.. Enumerable.Range(0, n).Select(_ => (short)rng.Next(short.MinValue, short.MaxValue + 1))];

    private static T[] ToArray<T>(Vector512<T> v)
    {
        var a = new T[Vector512<T>.Count];
        v.CopyTo(a);
        return a;
    }

    private static T[] ToArray<T>(Vector256<T> v)
    {
        var a = new T[Vector256<T>.Count];
        v.CopyTo(a);
        return a;
    }
}

/// <summary>A fact that needs AVX2 (the stand-ins are built from it): skipped, saying so, on CPUs without it.</summary>
public sealed class Avx2FactAttribute : FactAttribute
{
    public Avx2FactAttribute()
    {
        if (!(Avx2.IsSupported && Fma.IsSupported)) Skip = "needs AVX2";
    }
}
