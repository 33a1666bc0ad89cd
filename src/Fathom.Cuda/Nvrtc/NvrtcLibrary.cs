using System.Runtime.InteropServices;
using System.Text;
using Fathom.Cuda.Discovery;
using Fathom.Cuda.Driver;

namespace Fathom.Cuda.Nvrtc;

/// <summary>
/// NVRTC, CUDA's run-time compiler (<c>libnvrtc.so.13</c> or <c>.12</c>), bound through function pointers. Its
/// companion <c>libnvrtc-builtins</c> is loaded from the same folder first: NVRTC opens it by file name, which
/// fails when that folder is not on the loader path (the usual case for /usr/local/cuda-*/targets/.../lib).
/// </summary>
public sealed unsafe class NvrtcLibrary
{
    private static readonly LoadedOnce<NvrtcLibrary> Loaded = new(() => Load());

    private readonly delegate* unmanaged<int*, int*, int> _nvrtcVersion;
    private readonly delegate* unmanaged<int*, int> _nvrtcGetNumSupportedArchs;
    private readonly delegate* unmanaged<int*, int> _nvrtcGetSupportedArchs;
    private readonly delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int> _nvrtcCreateProgram;
    private readonly delegate* unmanaged<IntPtr*, int> _nvrtcDestroyProgram;
    private readonly delegate* unmanaged<IntPtr, int, byte**, int> _nvrtcCompileProgram;
    private readonly delegate* unmanaged<IntPtr, nuint*, int> _nvrtcGetProgramLogSize;
    private readonly delegate* unmanaged<IntPtr, byte*, int> _nvrtcGetProgramLog;
    private readonly delegate* unmanaged<IntPtr, nuint*, int> _nvrtcGetCUBINSize;
    private readonly delegate* unmanaged<IntPtr, byte*, int> _nvrtcGetCUBIN;
    private readonly delegate* unmanaged<IntPtr, nuint*, int> _nvrtcGetPTXSize;
    private readonly delegate* unmanaged<IntPtr, byte*, int> _nvrtcGetPTX;
    private readonly delegate* unmanaged<int, byte*> _nvrtcGetErrorString;

    private NvrtcLibrary(LibraryProbe library, LibraryProbe? builtins)
    {
        Library = library;
        Builtins = builtins;
        IntPtr h = library.Handle;
        _nvrtcVersion = (delegate* unmanaged<int*, int*, int>)Export(h, "nvrtcVersion");
        _nvrtcGetNumSupportedArchs = (delegate* unmanaged<int*, int>)Export(h, "nvrtcGetNumSupportedArchs");
        _nvrtcGetSupportedArchs = (delegate* unmanaged<int*, int>)Export(h, "nvrtcGetSupportedArchs");
        _nvrtcCreateProgram = (delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int>)Export(h, "nvrtcCreateProgram");
        _nvrtcDestroyProgram = (delegate* unmanaged<IntPtr*, int>)Export(h, "nvrtcDestroyProgram");
        _nvrtcCompileProgram = (delegate* unmanaged<IntPtr, int, byte**, int>)Export(h, "nvrtcCompileProgram");
        _nvrtcGetProgramLogSize = (delegate* unmanaged<IntPtr, nuint*, int>)Export(h, "nvrtcGetProgramLogSize");
        _nvrtcGetProgramLog = (delegate* unmanaged<IntPtr, byte*, int>)Export(h, "nvrtcGetProgramLog");
        _nvrtcGetCUBINSize = (delegate* unmanaged<IntPtr, nuint*, int>)Export(h, "nvrtcGetCUBINSize");
        _nvrtcGetCUBIN = (delegate* unmanaged<IntPtr, byte*, int>)Export(h, "nvrtcGetCUBIN");
        _nvrtcGetPTXSize = (delegate* unmanaged<IntPtr, nuint*, int>)Export(h, "nvrtcGetPTXSize");
        _nvrtcGetPTX = (delegate* unmanaged<IntPtr, byte*, int>)Export(h, "nvrtcGetPTX");
        _nvrtcGetErrorString = (delegate* unmanaged<int, byte*>)Export(h, "nvrtcGetErrorString");
        int major, minor;
        Check(_nvrtcVersion(&major, &minor), "nvrtcVersion");
        Version = new Version(major, minor);
        int count;
        Check(_nvrtcGetNumSupportedArchs(&count), "nvrtcGetNumSupportedArchs");
        var archs = new int[count];
        fixed (int* a = archs) Check(_nvrtcGetSupportedArchs(a), "nvrtcGetSupportedArchs");
        SupportedArchitectures = archs;
    }

    public LibraryProbe Library { get; }

    /// <summary>Where libnvrtc-builtins was loaded from (null when NVRTC is left to find it itself).</summary>
    public LibraryProbe? Builtins { get; }

    public Version Version { get; }

    /// <summary>The real architectures NVRTC can emit cubins for (75, 80, 86, 89, 90, ...).</summary>
    public IReadOnlyList<int> SupportedArchitectures { get; }

    public static NvrtcLibrary Instance => TryLoad(out NvrtcLibrary? nvrtc, out CudaException? failure) ? nvrtc : throw failure;

    public static bool TryLoad([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out NvrtcLibrary? nvrtc, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out CudaException? failure)
        => Loaded.TryGet(out nvrtc, out failure);

    private static NvrtcLibrary Load()
    {
        LibraryProbe library = CudaLibrarySearch.Probe("libnvrtc", ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]);
        if (!library.Found) throw new CudaException($"no NVRTC found: {library.Summary}");
        LibraryProbe? builtins = null;
        if (library.LoadedFrom is { } path && Path.GetDirectoryName(path) is { Length: > 0 } folder)
        {
            // The builtins' file name carries the full version (libnvrtc-builtins.so.13.0); take the one beside NVRTC.
            string[] names = Directory.EnumerateFiles(folder, "libnvrtc-builtins.so.*").Select(Path.GetFileName).OfType<string>()
                .OrderByDescending(n => n.Length).ToArray();
            if (names.Length > 0) builtins = CudaLibrarySearch.Probe("libnvrtc-builtins", names, [folder]);
        }
        try
        {
            return new NvrtcLibrary(library, builtins);
        }
        catch (EntryPointNotFoundException e)
        {
            throw new CudaException($"{library.LoadedFrom} is not a usable NVRTC: {e.Message}");
        }
    }

    private static IntPtr Export(IntPtr library, string name) =>
        NativeLibrary.TryGetExport(library, name, out IntPtr address) ? address : throw new EntryPointNotFoundException($"the NVRTC library has no {name}");

    private void Check(int result, string call)
    {
        if (result != 0) throw new CudaException(call, result, Describe(result));
    }

    public string Describe(int result) => Marshal.PtrToStringUTF8((IntPtr)_nvrtcGetErrorString(result)) ?? $"nvrtcResult {result}";

    /// <summary>
    /// Compiles one CUDA C source with the given options. <paramref name="cubin"/> chooses machine code (for an
    /// <c>sm_XX</c> architecture option) or PTX (for <c>compute_XX</c>). A compile error throws with NVRTC's log.
    /// </summary>
    public byte[] Compile(string source, string name, IReadOnlyList<string> options, bool cubin, out string log)
    {
        byte[] src = Encoding.UTF8.GetBytes(source + "\0");
        byte[] programName = Encoding.UTF8.GetBytes(name + "\0");
        IntPtr program;
        fixed (byte* s = src)
        fixed (byte* n = programName)
            Check(_nvrtcCreateProgram(&program, s, n, 0, null, null), "nvrtcCreateProgram");
        var pinned = options.Select(o => Encoding.UTF8.GetBytes(o + "\0")).Select(b => GCHandle.Alloc(b, GCHandleType.Pinned)).ToArray();
        try
        {
            byte** optionPointers = stackalloc byte*[pinned.Length];
            for (int i = 0; i < pinned.Length; i++) optionPointers[i] = (byte*)pinned[i].AddrOfPinnedObject();
            int compiled = _nvrtcCompileProgram(program, pinned.Length, optionPointers);
            log = ProgramLog(program);
            if (compiled != 0)
                throw new CudaException($"nvrtcCompileProgram({name}, {string.Join(' ', options)})", compiled, $"{Describe(compiled)}{Environment.NewLine}{log}");
            nuint size;
            if (cubin) Check(_nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize");
            else Check(_nvrtcGetPTXSize(program, &size), "nvrtcGetPTXSize");
            var image = new byte[(int)size];
            fixed (byte* i = image)
            {
                if (cubin) Check(_nvrtcGetCUBIN(program, i), "nvrtcGetCUBIN");
                else Check(_nvrtcGetPTX(program, i), "nvrtcGetPTX");
            }
            return image;
        }
        finally
        {
            foreach (GCHandle handle in pinned) handle.Free();
            _nvrtcDestroyProgram(&program);
        }
    }

    private string ProgramLog(IntPtr program)
    {
        nuint size;
        Check(_nvrtcGetProgramLogSize(program, &size), "nvrtcGetProgramLogSize");
        if (size <= 1) return "";
        var log = new byte[(int)size];
        fixed (byte* l = log) Check(_nvrtcGetProgramLog(program, l), "nvrtcGetProgramLog");
        return Encoding.UTF8.GetString(log, 0, log.Length - 1).Trim();
    }
}
