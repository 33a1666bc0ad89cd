using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants;

/// <summary>
/// Maps a requested <see cref="KernelPath"/> to the widest path a format implements that is no wider than the
/// request and that this CPU can run. Built once per format, so a dot product resolves its path with one load.
/// </summary>
public sealed class KernelDispatch
{
    private readonly KernelPath[] _resolved;

    public KernelDispatch(IReadOnlyList<KernelPath> implemented)
    {
        KernelPath[] all = Enum.GetValues<KernelPath>();
        _resolved = new KernelPath[all.Length];
        foreach (KernelPath requested in all) _resolved[(int)requested] = Widest(requested, implemented);
    }

    /// <summary>The widest of <paramref name="implemented"/> at or below <paramref name="requested"/> that this CPU runs.</summary>
    public static KernelPath Widest(KernelPath requested, IReadOnlyList<KernelPath> implemented)
    {
        KernelPath best = KernelPath.Scalar;
        foreach (KernelPath p in implemented)
            if (p <= requested && p > best && KernelPaths.IsSupported(p)) best = p;
        return best;
    }

    /// <summary>
    /// <see cref="Widest"/> for kernels that implement exactly Scalar, Portable and Avx2 (the K-quant, IQ3/IQ4 and
    /// ternary dots), without a table: the IsSupported checks are JIT-time constants, so this costs nothing per call.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static KernelPath UpToAvx2(KernelPath requested)
    {
        if (requested >= KernelPath.Avx2 && Avx2.IsSupported && Fma.IsSupported) return KernelPath.Avx2;
        if (requested >= KernelPath.Portable && Vector128.IsHardwareAccelerated) return KernelPath.Portable;
        return KernelPath.Scalar;
    }

    /// <summary>
    /// <see cref="UpToAvx2"/> for kernels that also implement <see cref="KernelPath.Avx512"/> and, when
    /// <paramref name="vnni"/> (a constant at every call), <see cref="KernelPath.AvxVnni"/>. Same rules as
    /// <see cref="Widest"/>, folded by the JIT.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static KernelPath UpToAvx512(KernelPath requested, bool vnni)
    {
        if (requested >= KernelPath.Avx512 && Avx512BW.IsSupported && Avx512F.IsSupported && Avx2.IsSupported && Fma.IsSupported) return KernelPath.Avx512;
        if (vnni && requested >= KernelPath.AvxVnni && AvxVnni.IsSupported && Avx2.IsSupported && Fma.IsSupported) return KernelPath.AvxVnni;
        return UpToAvx2(requested);
    }

    public KernelPath Resolve(KernelPath requested) =>
        (uint)requested < (uint)_resolved.Length ? _resolved[(int)requested] : KernelPath.Scalar;
}
