using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants;

/// <summary>
/// The instruction-set paths a dot-product kernel can take. <see cref="Scalar"/> is the plain reference every
/// other path is tested against; <see cref="Portable"/> uses only Vector128 so it also runs on ARM64.
/// </summary>
public enum KernelPath
{
    Scalar,
    Portable,
    Avx2,
    AvxVnni,
    Avx512,
}

public static class KernelPaths
{
    /// <summary>Paths this CPU can execute, from the reference up to the widest.</summary>
    public static IReadOnlyList<KernelPath> Supported { get; } = Detect();

    /// <summary>The fastest path this CPU supports; kernels fall back to the next narrower path they implement.</summary>
    public static KernelPath Best { get; } = Supported[^1];

    public static bool IsSupported(KernelPath path) => Supported.Contains(path);

    /// <summary>
    /// Whether formats use their AVX-512 / AVX-VNNI kernels by default. Those kernels agree with the scalar reference
    /// on real hardware (Fathom.KernelCheck on an H200 host's Xeon, 2026-11-28), but there they measured no faster
    /// than the AVX2 kernels (Q6_K half as fast), so by default a format stops at AVX2. Set the environment variable
    /// <c>FATHOM_CPU_WIDE_KERNELS=1</c> to use them; an explicit path argument always runs the requested kernel.
    /// </summary>
    public static bool UseWideKernels { get; } = Environment.GetEnvironmentVariable("FATHOM_CPU_WIDE_KERNELS") == "1";

    /// <summary>Whether <paramref name="path"/> may be picked by default: supported, and not a wide path unless opted in.</summary>
    public static bool IsDefaultCandidate(KernelPath path) => IsSupported(path) && (UseWideKernels || path <= KernelPath.Avx2);

    private static KernelPath[] Detect()
    {
        var paths = new List<KernelPath> { KernelPath.Scalar };
        if (Vector128.IsHardwareAccelerated) paths.Add(KernelPath.Portable);
        if (Avx2.IsSupported && Fma.IsSupported) paths.Add(KernelPath.Avx2);
        if (AvxVnni.IsSupported) paths.Add(KernelPath.AvxVnni);
        if (Avx512BW.IsSupported && Avx512F.IsSupported) paths.Add(KernelPath.Avx512);
        return [.. paths];
    }
}
