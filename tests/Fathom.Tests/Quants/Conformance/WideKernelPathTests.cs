using System.Reflection;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants;
using Xunit.Sdk;

namespace Fathom.Tests.Quants.Conformance;

/// <summary>
/// The AVX-512 and AVX-VNNI kernels. On a CPU that has the instructions they run for real (here and in
/// <see cref="WeightFormatConformanceTests.Dot_EveryPathMatchesScalarAndGgml"/>); on one that lacks them those rows
/// show as skipped, and the kernels still run through <see cref="WeightFormat.DotUnchecked"/>, their wide
/// instructions replaced by Int8SimdWide's exact AVX2 stand-ins, so their data flow is tested on AVX2 machines too.
/// </summary>
public class WideKernelPathTests
{
    [Theory]
    [WidePaths(onThisCpu: true)]
    [WidePaths(onThisCpu: false)]
    public void WidePath_OnThisCpu_MatchesScalar(GgmlType type, KernelPath path)
    {
        DotPathCheck.Outcome outcome = DotPathCheck.Check(TypeTraits.For(type), path);
        Assert.True(outcome.Passed, outcome.FirstFailure);
    }

    [Theory]
    [WidePathsWithStandIns]
    public void WidePath_WithAvx2StandIns_MatchesScalar(GgmlType type, KernelPath path)
    {
        WeightFormat format = TypeTraits.For(type);
        DotPathCheck.Outcome outcome = DotPathCheck.Check(format, (w, a, n) => format.DotUnchecked(w, a, n, path));
        Assert.True(outcome.Passed, outcome.FirstFailure);
        Assert.True(outcome.Cases > 0);
    }

    [Fact]
    public void Checker_PassesEveryPathThisCpuRuns_AndCatchesAWrongKernel()
    {
        foreach (GgmlType type in new[] { GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.IQ2_XXS })
        {
            WeightFormat format = TypeTraits.For(type);
            foreach (KernelPath path in format.ImplementedPaths.Where(KernelPaths.IsSupported))
            {
                DotPathCheck.Outcome outcome = DotPathCheck.Check(format, path);
                Assert.True(outcome.Passed, outcome.FirstFailure);
                Assert.True(outcome.MaxRelativeError <= DotPathCheck.RelativeTolerance);
            }
            // Off by 10⁻³ of the result: far beyond float rounding, and the checker must say so.
            DotPathCheck.Outcome wrong = DotPathCheck.Check(format, (w, a, n) => format.Dot(w, a, n) * (1 + 1e-3f));
            Assert.False(wrong.Passed, $"{type}: a kernel off by 1e-3 passed");
        }
    }

    [Fact]
    public void UpToAvx512_ResolvesAsWidest()
    {
        KernelPath[] withVnni = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2, KernelPath.AvxVnni, KernelPath.Avx512];
        KernelPath[] withoutVnni = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2, KernelPath.Avx512];
        foreach (KernelPath requested in Enum.GetValues<KernelPath>())
        {
            Assert.Equal(KernelDispatch.Widest(requested, withVnni), KernelDispatch.UpToAvx512(requested, vnni: true));
            Assert.Equal(KernelDispatch.Widest(requested, withoutVnni), KernelDispatch.UpToAvx512(requested, vnni: false));
        }
    }

    /// <summary>Every (type, path) with an AVX-512 or AVX-VNNI kernel.</summary>
    public static IEnumerable<(GgmlType Type, KernelPath Path)> WideKernels() =>
        TypeTraits.All.SelectMany(f => f.ImplementedPaths
            .Where(p => p is KernelPath.AvxVnni or KernelPath.Avx512)
            .Select(p => (f.Type, p)));
}

/// <summary>
/// Wide kernels this CPU runs (<paramref name="onThisCpu"/> true), or the ones it cannot run, as skipped rows that
/// name the missing instructions.
/// </summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
public sealed class WidePathsAttribute : DataAttribute
{
    private readonly bool _onThisCpu;

    public WidePathsAttribute(bool onThisCpu)
    {
        _onThisCpu = onThisCpu;
        if (!onThisCpu)
            Skip = "this CPU lacks the path's instructions (AVX-512BW/F or AVX-VNNI): run tools/Fathom.KernelCheck on one that has them";
    }

    public override IEnumerable<object[]> GetData(MethodInfo testMethod) =>
        WideKernelPathTests.WideKernels()
            .Where(k => KernelPaths.IsSupported(k.Path) == _onThisCpu)
            .Select(k => new object[] { k.Type, k.Path });
}

/// <summary>Every wide kernel, to run through the AVX2 stand-ins; skipped on CPUs without AVX2.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class WidePathsWithStandInsAttribute : DataAttribute
{
    public WidePathsWithStandInsAttribute()
    {
        if (!(Avx2.IsSupported && Fma.IsSupported)) Skip = "the stand-ins for the wide instructions need AVX2";
    }

    public override IEnumerable<object[]> GetData(MethodInfo testMethod) =>
        WideKernelPathTests.WideKernels().Select(k => new object[] { k.Type, k.Path });
}
