namespace Fathom.Models.Synthesis;

/// <summary>
/// Synthetic model files kept between runs, outside any repository: <c>$FATHOM_SYNTHETIC_CACHE</c>, else
/// <c>$XDG_CACHE_HOME/fathom/synthetic</c>, else <c>~/.cache/fathom/synthetic</c>. A file is named by the hash of
/// its blueprint's header, the fill and the seed, so a second run of the same model reuses it; it is written under a
/// temporary name and renamed when complete, so an interrupted run leaves no half file behind under the real name.
/// </summary>
public static class SyntheticModelCache
{
    public static string DefaultDirectory
    {
        get
        {
            string? explicitDirectory = Environment.GetEnvironmentVariable("FATHOM_SYNTHETIC_CACHE");
            if (!string.IsNullOrEmpty(explicitDirectory)) return explicitDirectory;
            string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            string root = !string.IsNullOrEmpty(xdg) ? xdg
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
            return Path.Combine(root, "fathom", "synthetic");
        }
    }

    /// <summary>The path the blueprint's model has (or will have) in <paramref name="directory"/>.</summary>
    public static string PathFor(ModelBlueprint blueprint, WeightFill fill = WeightFill.Tiled, int seed = 1234, string? directory = null)
    {
        ArgumentNullException.ThrowIfNull(blueprint);
        string name = $"{blueprint.Architecture}-{blueprint.Layers}l-{blueprint.ContentHash()[..20]}-{fill.ToString().ToLowerInvariant()}-{seed}.gguf";
        return Path.Combine(directory ?? DefaultDirectory, name);
    }

    /// <summary>Whether the model is cached already (then <see cref="GetOrCreate"/> returns at once).</summary>
    public static bool Contains(ModelBlueprint blueprint, WeightFill fill = WeightFill.Tiled, int seed = 1234, string? directory = null) =>
        File.Exists(PathFor(blueprint, fill, seed, directory));

    /// <summary>The cached file of the blueprint's model, synthesized first if it is not there.</summary>
    public static string GetOrCreate(ModelBlueprint blueprint, WeightFill fill = WeightFill.Tiled, int seed = 1234,
        IProgress<double>? progress = null, string? directory = null)
    {
        string path = PathFor(blueprint, fill, seed, directory);
        if (File.Exists(path)) return path;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        string temporary = $"{path}.{Environment.ProcessId}.partial";
        try
        {
            ModelSynthesizer.Write(blueprint, temporary, fill, seed, progress);
            // Another process may have finished the same model meanwhile; its file is identical, so replacing it is harmless.
            File.Move(temporary, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temporary)) File.Delete(temporary);
        }
        return path;
    }
}
