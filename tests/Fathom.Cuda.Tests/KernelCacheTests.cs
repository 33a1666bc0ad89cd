using Fathom.Cuda.Kernels;

namespace Fathom.Cuda.Tests;

public sealed class KernelCacheTests : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), $"fathom-cache-test-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(_folder)) Directory.Delete(_folder, recursive: true);
    }

    [Fact]
    public void TheKeyChangesWithSourceOptionsTargetDriverAndCompiler()
    {
        string baseline = KernelCache.Key("src", ["-a"], "sm_90a", 13000, new Version(13, 0));
        Assert.Equal(baseline, KernelCache.Key("src", ["-a"], "sm_90a", 13000, new Version(13, 0)));
        Assert.Equal(64, baseline.Length);
        string[] variants =
        [
            KernelCache.Key("src ", ["-a"], "sm_90a", 13000, new Version(13, 0)),
            KernelCache.Key("src", ["-b"], "sm_90a", 13000, new Version(13, 0)),
            KernelCache.Key("src", ["-a", "-b"], "sm_90a", 13000, new Version(13, 0)),
            KernelCache.Key("src", ["-a"], "sm_89", 13000, new Version(13, 0)),
            KernelCache.Key("src", ["-a"], "sm_90a", 12080, new Version(13, 0)),
            KernelCache.Key("src", ["-a"], "sm_90a", 13000, new Version(12, 8)),
        ];
        Assert.Equal(variants.Length + 1, variants.Append(baseline).Distinct().Count());
    }

    [Fact]
    public void AStoredImageReadsBackUnchanged()
    {
        var cache = new KernelCache(_folder);
        byte[] image = RandomImage(1000);
        Assert.Null(cache.TryRead("k"));
        Assert.True(cache.TryWrite("k", image));
        Assert.Equal(image, cache.TryRead("k"));
        Assert.Empty(Directory.GetFiles(_folder, "*.tmp"));
    }

    [Theory]
    [InlineData("flip")]
    [InlineData("truncate")]
    [InlineData("magic")]
    [InlineData("empty")]
    public void ACorruptEntryIsAMissAndIsDeleted(string damage)
    {
        var cache = new KernelCache(_folder);
        Assert.True(cache.TryWrite("k", RandomImage(500)));
        string path = cache.PathFor("k");
        byte[] file = File.ReadAllBytes(path);
        switch (damage)
        {
            case "flip": file[^10] ^= 0x40; break;
            case "truncate": file = file[..^1]; break;
            case "magic": file[0] = (byte)'X'; break;
            case "empty": file = []; break;
        }
        File.WriteAllBytes(path, file);
        Assert.Null(cache.TryRead("k"));
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void AnUnwritableFolderIsSkippedNotFatal()
    {
        string blocker = Path.Combine(Path.GetTempPath(), $"fathom-cache-file-{Guid.NewGuid():N}");
        File.WriteAllText(blocker, "a file where the cache folder should be");
        try
        {
            var cache = new KernelCache(Path.Combine(blocker, "cuda"));
            Assert.False(cache.TryWrite("k", RandomImage(10)));
            Assert.Null(cache.TryRead("k"));
        }
        finally
        {
            File.Delete(blocker);
        }
    }

    [Fact]
    public void TheDefaultFolderFollowsTheEnvironment()
    {
        string? saved = Environment.GetEnvironmentVariable("FATHOM_CUDA_CACHE");
        try
        {
            Environment.SetEnvironmentVariable("FATHOM_CUDA_CACHE", _folder);
            Assert.Equal(_folder, KernelCache.Default().Directory);
            Environment.SetEnvironmentVariable("FATHOM_CUDA_CACHE", null);
            Assert.EndsWith(Path.Combine("fathom", "cuda"), KernelCache.Default().Directory);
        }
        finally
        {
            Environment.SetEnvironmentVariable("FATHOM_CUDA_CACHE", saved);
        }
    }

    private static byte[] RandomImage(int length)
    {
        var image = new byte[length];
        new Random(length).NextBytes(image);
        return image;
    }
}
