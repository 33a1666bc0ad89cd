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
