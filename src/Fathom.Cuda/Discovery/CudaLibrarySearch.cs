using System.Runtime.InteropServices;

namespace Fathom.Cuda.Discovery;

/// <summary>
/// Where CUDA's native libraries are looked for, in order: <c>CUDA_PATH</c>, <c>/usr/local/cuda</c> and the
/// versioned <c>/usr/local/cuda-*</c> installs (newest first; <c>lib64</c> and <c>targets/x86_64-linux/lib</c>),
/// each <c>LD_LIBRARY_PATH</c> entry, pip's <c>nvidia-*</c> wheels (<c>site-packages/nvidia/*/lib</c>), and last the
/// system loader's own path by bare file name. Each file name is tried in order of preference (CUDA 13 before 12).
/// </summary>
public static class CudaLibrarySearch
{
    /// <summary>Looks for a library by its versioned file names, in the folders above, then through the system loader.</summary>
    public static LibraryProbe Probe(string library, IReadOnlyList<string> fileNames, IReadOnlyList<string>? directories = null, bool loaderFirst = false)
    {
        var attempts = new List<LibraryAttempt>();
        if (loaderFirst && TryLoader(fileNames, attempts) is { } early) return early.Probe(library, attempts);
        foreach (string directory in directories ?? Directories())
        {
            foreach (string name in fileNames)
            {
                string path = Path.Combine(directory, name);
                if (!File.Exists(path))
                {
                    attempts.Add(new LibraryAttempt(path, "not present"));
                    continue;
                }
                if (TryLoad(path, attempts) is { } handle) return new LibraryProbe(library, attempts, handle, path);
            }
        }
        if (!loaderFirst && TryLoader(fileNames, attempts) is { } late) return late.Probe(library, attempts);
        return new LibraryProbe(library, attempts, IntPtr.Zero, null);
    }

    private readonly record struct Loaded(IntPtr Handle, string Name)
    {
        public LibraryProbe Probe(string library, List<LibraryAttempt> attempts) => new(library, attempts, Handle, Name);
    }

    private static Loaded? TryLoader(IReadOnlyList<string> fileNames, List<LibraryAttempt> attempts)
    {
        foreach (string name in fileNames)
            if (TryLoad(name, attempts) is { } handle) return new Loaded(handle, name);
        return null;
    }

    private static IntPtr? TryLoad(string candidate, List<LibraryAttempt> attempts)
    {
        try
        {
            IntPtr handle = NativeLibrary.Load(candidate);
            attempts.Add(new LibraryAttempt(candidate, "loaded"));
            return handle;
        }
        catch (DllNotFoundException e)
        {
            // The loader's message says whether the file is missing or a dependency of it is.
            string message = e.Message.Replace(Environment.NewLine, " ");
            attempts.Add(new LibraryAttempt(candidate, candidate.Contains('/') ? message : "not on the loader path"));
            return null;
        }
        catch (BadImageFormatException e)
        {
            attempts.Add(new LibraryAttempt(candidate, $"not a loadable library: {e.Message}"));
            return null;
        }
    }

    /// <summary>The folders searched, in order, for this process's environment. Duplicates are removed.</summary>
    public static IReadOnlyList<string> Directories()
    {
        var folders = new List<string>();
        void AddRoot(string? root)
        {
            if (string.IsNullOrWhiteSpace(root)) return;
            folders.Add(Path.Combine(root, "lib64"));
            folders.Add(Path.Combine(root, "targets", "x86_64-linux", "lib"));
            folders.Add(Path.Combine(root, "lib"));
        }

        AddRoot(Environment.GetEnvironmentVariable("CUDA_PATH"));
        AddRoot(Environment.GetEnvironmentVariable("CUDA_HOME"));
        AddRoot("/usr/local/cuda");
        foreach (string versioned in VersionedInstalls("/usr/local")) AddRoot(versioned);
        foreach (string entry in (Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            folders.Add(entry);
        folders.AddRange(PipNvidiaFolders());
        return folders.Distinct(StringComparer.Ordinal).ToList();
    }

    /// <summary><c>cuda-13.0</c>, <c>cuda-12.4</c>, ... under <paramref name="parent"/>, newest version first.</summary>
    internal static IEnumerable<string> VersionedInstalls(string parent)
    {
        if (!Directory.Exists(parent)) return [];
        return Directory.EnumerateDirectories(parent, "cuda-*")
            .Select(d => (Path: d, Version: Version.TryParse(Path.GetFileName(d)["cuda-".Length..], out Version? v) ? v : null))
            .Where(d => d.Version is not null)
            .OrderByDescending(d => d.Version)
            .Select(d => d.Path);
    }

    /// <summary>The <c>lib</c> folders of pip's <c>nvidia-*</c> wheels (nvidia/cuda_nvrtc/lib, nvidia/cu13/lib, ...).</summary>
    internal static IEnumerable<string> PipNvidiaFolders()
    {
        var sitePackages = new List<string>();
        string? virtualEnv = Environment.GetEnvironmentVariable("VIRTUAL_ENV");
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        foreach (string? root in new[] { virtualEnv is null ? null : Path.Combine(virtualEnv, "lib"), "/usr/lib", "/usr/local/lib", Path.Combine(home, ".local", "lib") })
        {
            if (root is null || !Directory.Exists(root)) continue;
            foreach (string python in Directory.EnumerateDirectories(root, "python3*"))
            {
                sitePackages.Add(Path.Combine(python, "site-packages"));
                sitePackages.Add(Path.Combine(python, "dist-packages"));
            }
        }
        foreach (string site in sitePackages)
        {
            string nvidia = Path.Combine(site, "nvidia");
            if (!Directory.Exists(nvidia)) continue;
            foreach (string package in Directory.EnumerateDirectories(nvidia).Order(StringComparer.Ordinal))
            {
                string lib = Path.Combine(package, "lib");
                if (Directory.Exists(lib)) yield return lib;
            }
        }
    }
}
