using System.Security.Cryptography;
using System.Text;

namespace Fathom.Cuda.Kernels;

/// <summary>
/// Compiled kernel images on disk, so NVRTC runs once per source, options, architecture and driver. A file holds
/// a magic tag, the SHA-256 of its image and the image; a file that fails that check (a torn write, a disk error)
/// is deleted and the image compiled again. Writes go to a temporary file that is renamed into place, so
/// concurrent processes never read half a file.
/// </summary>
public sealed class KernelCache
{
    private static readonly byte[] Magic = "FTHMCUB1"u8.ToArray();
    private const int HeaderBytes = 8 + 32;

    public KernelCache(string directory) => Directory = directory;

    public string Directory { get; }

    /// <summary>
    /// <c>$FATHOM_CUDA_CACHE</c>, else <c>$XDG_CACHE_HOME/fathom/cuda</c>, else <c>~/.cache/fathom/cuda</c>.
    /// </summary>
    public static KernelCache Default()
    {
        string? explicitFolder = Environment.GetEnvironmentVariable("FATHOM_CUDA_CACHE");
        if (!string.IsNullOrWhiteSpace(explicitFolder)) return new KernelCache(explicitFolder);
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string root = !string.IsNullOrWhiteSpace(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return new KernelCache(Path.Combine(root, "fathom", "cuda"));
    }

    /// <summary>The cache key: a hash of everything that changes the compiled image.</summary>
    public static string Key(string source, IEnumerable<string> options, string target, int driverVersion, Version compilerVersion)
    {
        var text = new StringBuilder("fathom-cuda-kernel/1\n")
            .Append("target=").Append(target).Append('\n')
            .Append("driver=").Append(driverVersion).Append('\n')
            .Append("nvrtc=").Append(compilerVersion).Append('\n');
        foreach (string option in options) text.Append("option=").Append(option).Append('\n');
        text.Append(source);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    public string PathFor(string key) => Path.Combine(Directory, key + ".bin");

    /// <summary>The cached image for <paramref name="key"/>, or null when absent or corrupt (a corrupt file is deleted).</summary>
    public byte[]? TryRead(string key)
    {
        string path = PathFor(key);
        byte[] file;
        try
        {
            file = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null; // absent (the usual miss) or unreadable: compile instead
        }
        if (file.Length > HeaderBytes && file.AsSpan(0, 8).SequenceEqual(Magic))
        {
            byte[] image = file[HeaderBytes..];
            if (SHA256.HashData(image).AsSpan().SequenceEqual(file.AsSpan(8, 32))) return image;
        }
        Remove(key);
        return null;
    }

    /// <summary>Stores an image; a cache that cannot be written (read-only home, full disk) is skipped, not fatal.</summary>
    public bool TryWrite(string key, ReadOnlySpan<byte> image)
    {
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            string temporary = Path.Combine(Directory, $"{key}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write))
            {
                stream.Write(Magic);
                stream.Write(SHA256.HashData(image));
                stream.Write(image);
            }
            File.Move(temporary, PathFor(key), overwrite: true);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Deletes an entry (one the driver refused to load, say).</summary>
    public void Remove(string key)
    {
        try
        {
            File.Delete(PathFor(key));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Another process may hold or have removed it; the next write replaces it.
        }
    }
}
