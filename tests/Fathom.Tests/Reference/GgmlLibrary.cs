using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Tests.Reference;

/// <summary>
/// Locates and loads ggml's native libraries that ship in the LLamaSharp.Backend.Cpu NuGet package,
/// so that tests can call ggml itself as the reference (quantizers, type traits, gguf API, CPU kernels).
/// </summary>
public static class GgmlLibrary
{
    private static readonly Lazy<string> NativeDirectory = new(FindNativeDirectory);
    private static readonly Lazy<nint> BaseHandle = new(() => NativeLibrary.Load(Path.Combine(NativeDirectory.Value, "libggml-base.so")));
    private static readonly Lazy<nint> CpuHandle = new(() =>
    {
        _ = BaseHandle.Value; // libggml-cpu.so resolves its ggml-base symbols from the already loaded library
        return NativeLibrary.Load(Path.Combine(NativeDirectory.Value, "libggml-cpu.so"));
    });

    /// <summary>The folder with the build of ggml that fits this CPU (avx512, avx2, avx or noavx).</summary>
    public static string Directory => NativeDirectory.Value;

    /// <summary>
    /// Whether the build in use is the AVX2 one, whose float kernels Fathom's CPU code repeats bit for bit (the
    /// summation orders of <see cref="Fathom.Quants.DotOrder"/>, ggml_v_expf, ...); other builds add in other orders.
    /// </summary>
    public static bool IsAvx2Build => Path.GetFileName(Directory) == "avx2";

    public static nint Base => BaseHandle.Value;
    public static nint Cpu => CpuHandle.Value;

    public static nint BaseExport(string name) => NativeLibrary.GetExport(Base, name);
    public static nint CpuExport(string name) => NativeLibrary.GetExport(Cpu, name);

    private static string FindNativeDirectory()
    {
        string rid = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "linux-arm64" : "linux-x64";
        string[] flavours = Avx512F.IsSupported ? ["avx512", "avx2", "avx", "noavx"]
            : Avx2.IsSupported ? ["avx2", "avx", "noavx"]
            : Avx.IsSupported ? ["avx", "noavx"] : ["noavx"];
        string baseDir = AppContext.BaseDirectory;
        foreach (string flavour in flavours)
        {
            string dir = Path.Combine(baseDir, "runtimes", rid, "native", flavour);
            if (File.Exists(Path.Combine(dir, "libggml-base.so"))) return dir;
        }
        string flat = Path.Combine(baseDir, "runtimes", rid, "native");
        if (File.Exists(Path.Combine(flat, "libggml-base.so"))) return flat;
        throw new DllNotFoundException($"libggml-base.so from LLamaSharp.Backend.Cpu not found under {baseDir}runtimes/{rid}/native");
    }
}
