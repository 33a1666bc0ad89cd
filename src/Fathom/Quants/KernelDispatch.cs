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
        foreach (KernelPath requested in all)
        {
            KernelPath best = KernelPath.Scalar;
            foreach (KernelPath p in implemented)
                if (p <= requested && p > best && KernelPaths.IsSupported(p)) best = p;
            _resolved[(int)requested] = best;
        }
    }

    public KernelPath Resolve(KernelPath requested) =>
        (uint)requested < (uint)_resolved.Length ? _resolved[(int)requested] : KernelPath.Scalar;
}
