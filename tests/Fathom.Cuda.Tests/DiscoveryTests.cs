using System.Runtime.InteropServices;
using Fathom.Cuda.Discovery;

namespace Fathom.Cuda.Tests;

public sealed class DiscoveryTests : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), $"fathom-discovery-{Guid.NewGuid():N}");

    public DiscoveryTests() => Directory.CreateDirectory(_folder);

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    [Fact]
    public void AMissingLibraryListsEveryPlaceTried()
    {
        string other = Path.Combine(_folder, "other");
        Directory.CreateDirectory(other);
        LibraryProbe probe = CudaLibrarySearch.Probe("libfathom-absent", ["libfathom-absent.so.2", "libfathom-absent.so.1"], [_folder, other]);
        Assert.False(probe.Found);
        Assert.Null(probe.LoadedFrom);
        // Two folders × two names, then both names through the system loader.
        Assert.Equal(6, probe.Attempts.Count);
        Assert.Equal(Path.Combine(_folder, "libfathom-absent.so.2"), probe.Attempts[0].Candidate);
        Assert.Equal("not present", probe.Attempts[0].Outcome);
        Assert.Equal("libfathom-absent.so.1", probe.Attempts[^1].Candidate);
        Assert.Contains("not found", probe.Summary);
        Assert.Contains("2 folders searched", probe.Summary);
    }

    [Fact]
    public void ALibraryInASearchedFolderLoadsFromThere()
    {
        // Any real shared library will do: copy the runtime's own System.Native under a CUDA-like versioned name.
        string native = Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "libSystem.Native.so");
        Assert.SkipUnless(File.Exists(native), $"this runtime has no {native} to copy");
        string copy = Path.Combine(_folder, "libfathom-fake.so.12");
        File.Copy(native, copy);
        LibraryProbe probe = CudaLibrarySearch.Probe("libfathom-fake", ["libfathom-fake.so.13", "libfathom-fake.so.12"], [_folder]);
        Assert.True(probe.Found);
        Assert.Equal(copy, probe.LoadedFrom);
        Assert.Equal([("not present"), "loaded"], probe.Attempts.Select(a => a.Outcome));
    }

    [Fact]
    public void AFileThatIsNotALibraryIsReportedWithTheLoadersReason()
    {
        File.WriteAllText(Path.Combine(_folder, "libfathom-broken.so.1"), "not an ELF file");
        LibraryProbe probe = CudaLibrarySearch.Probe("libfathom-broken", ["libfathom-broken.so.1"], [_folder]);
        Assert.False(probe.Found);
        LibraryAttempt attempt = probe.Attempts[0];
        Assert.NotEqual("not present", attempt.Outcome);
        Assert.Contains(attempt.Candidate, probe.Summary);
    }

    [Fact]
    public void VersionedToolkitsAreSearchedNewestFirst()
    {
        foreach (string name in new[] { "cuda-12.4", "cuda-13.0", "cuda-9.2", "cuda-12.10", "cuda-notes" })
            Directory.CreateDirectory(Path.Combine(_folder, name));
        Assert.Equal(["cuda-13.0", "cuda-12.10", "cuda-12.4", "cuda-9.2"],
            CudaLibrarySearch.VersionedInstalls(_folder).Select(Path.GetFileName));
    }

    [Fact]
    public void CudaPathAndLdLibraryPathAreSearchedBeforeTheDefaults()
    {
        string? savedCuda = Environment.GetEnvironmentVariable("CUDA_PATH");
        string? savedLd = Environment.GetEnvironmentVariable("LD_LIBRARY_PATH");
        try
        {
            Environment.SetEnvironmentVariable("CUDA_PATH", _folder);
            Environment.SetEnvironmentVariable("LD_LIBRARY_PATH", "/opt/fathom-a:/opt/fathom-b");
            IReadOnlyList<string> folders = CudaLibrarySearch.Directories();
            Assert.Equal(Path.Combine(_folder, "lib64"), folders[0]);
            Assert.Equal(Path.Combine(_folder, "targets", "x86_64-linux", "lib"), folders[1]);
            int local = folders.ToList().IndexOf("/usr/local/cuda/lib64");
            Assert.True(local > 1);
            Assert.True(folders.ToList().IndexOf("/opt/fathom-a") > local);
            Assert.True(folders.ToList().IndexOf("/opt/fathom-b") > folders.ToList().IndexOf("/opt/fathom-a"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("CUDA_PATH", savedCuda);
            Environment.SetEnvironmentVariable("LD_LIBRARY_PATH", savedLd);
        }
    }

    [Fact]
    public void TheEnvironmentReportNeverThrowsAndExplainsWhatIsMissing()
    {
        CudaEnvironment environment = CudaEnvironment.Detect();
        if (environment.Usable)
        {
            Assert.Null(environment.Problem);
            Assert.NotEmpty(environment.Gpus);
        }
        else
        {
            Assert.False(string.IsNullOrWhiteSpace(environment.Problem));
            if (environment.Driver is null) Assert.Contains("no CUDA driver found", environment.Problem);
        }
    }
}
