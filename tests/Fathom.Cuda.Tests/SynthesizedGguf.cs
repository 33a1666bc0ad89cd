using Fathom.Models.Synthesis;

namespace Fathom.Cuda.Tests;

/// <summary>
/// A random-weight model written by <see cref="ModelSynthesizer"/> to a GGUF file of its own in the temporary folder,
/// deleted on dispose. Declared before the <c>GgufFile</c> and models that read it, so a <c>using</c> scope closes
/// them first and deletes the file last.
/// </summary>
internal sealed class SynthesizedGguf : IDisposable
{
    public SynthesizedGguf(SyntheticModelSpec spec, string name)
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"{name}-{Guid.NewGuid():N}.gguf");
        ModelSynthesizer.Write(spec, Path);
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    public void Dispose() => File.Delete(Path);
}
