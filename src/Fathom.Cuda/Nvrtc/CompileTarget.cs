namespace Fathom.Cuda.Nvrtc;

/// <summary>
/// What NVRTC is asked to produce for a GPU: machine code for the GPU's own architecture when NVRTC knows it
/// (with the <c>a</c> suffix on Hopper, sm_90a, so architecture-specific instructions are allowed), otherwise PTX
/// for the newest architecture NVRTC knows that the GPU can run, which the driver then compiles.
/// </summary>
public sealed record CompileTarget(string ArchitectureOption, bool Cubin)
{
    /// <summary>The architecture number an option names (90 for <c>--gpu-architecture=sm_90a</c> or <c>compute_90</c>), or 0.</summary>
    public static int ArchitectureOf(string architectureOption)
    {
        int at = architectureOption.LastIndexOf('_');
        if (at < 0) return 0;
        int end = at + 1;
        while (end < architectureOption.Length && char.IsAsciiDigit(architectureOption[end])) end++;
        return int.TryParse(architectureOption.AsSpan(at + 1, end - at - 1), out int architecture) ? architecture : 0;
    }

    public static CompileTarget For(int deviceArchitecture, IReadOnlyList<int> supported)
    {
        if (supported.Contains(deviceArchitecture))
            return new CompileTarget($"--gpu-architecture=sm_{deviceArchitecture}{(deviceArchitecture == 90 ? "a" : "")}", Cubin: true);
        int[] older = supported.Where(a => a <= deviceArchitecture).ToArray();
        if (older.Length == 0)
            throw new Driver.CudaException($"NVRTC supports architectures {string.Join(", ", supported)}, none of which runs on compute capability {deviceArchitecture / 10}.{deviceArchitecture % 10}");
        return new CompileTarget($"--gpu-architecture=compute_{older.Max()}", Cubin: false);
    }
}
