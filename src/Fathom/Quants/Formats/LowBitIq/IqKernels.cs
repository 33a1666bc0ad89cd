using System.Runtime.CompilerServices;

namespace Fathom.Quants.Formats.LowBitIq;

/// <summary>The path table shared by the IQ1/IQ2 dot kernels.</summary>
internal static class IqKernels
{
    /// <summary>For every requested path, the one <see cref="KernelDispatch.Widest"/> picks: computed once so a dot call only indexes.</summary>
    public static KernelPath[] ResolutionTable(IReadOnlyList<KernelPath> implemented)
    {
        KernelPath[] all = Enum.GetValues<KernelPath>();
        var table = new KernelPath[(int)all.Max() + 1];
        foreach (KernelPath requested in all) table[(int)requested] = KernelDispatch.Widest(requested, implemented);
        return table;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static KernelPath Pick(KernelPath[] table, KernelPath requested) =>
        (uint)requested < (uint)table.Length ? table[(int)requested] : table[^1];
}
