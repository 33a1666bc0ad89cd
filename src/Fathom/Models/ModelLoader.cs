using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>Opens a GGUF model and builds the architecture its <c>general.architecture</c> names.</summary>
public static class ModelLoader
{
    public static IReadOnlyList<string> Architectures { get; } = ["llama", "qwen2", "deepseek2"];

    /// <summary>Opens <paramref name="path"/> (the first part of a split model) and loads it on the CPU; the model owns the file.</summary>
    public static Model Load(string path, ModelOptions? options = null)
    {
        GgufFile file = GgufFile.Open(path);
        try
        {
            return Load(file, options, ownsFile: true);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Loads a model from an open file on the CPU backend; the caller keeps the file open while the model is used.</summary>
    public static Model Load(GgufFile file, ModelOptions? options = null, bool ownsFile = false)
    {
        options ??= new ModelOptions();
        var backend = new CpuBackend(options.Threads);
        try
        {
            return Load(file, backend, ownsFile);
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    /// <summary>Loads a model onto a given backend (the model disposes it).</summary>
    public static Model Load(GgufFile file, IComputeBackend backend, bool ownsFile = false)
    {
        ModelConfig config = ModelConfig.Read(file.Metadata);
        return config.Architecture switch
        {
            "llama" => new Llama(file, config, backend, ownsFile),
            "qwen2" => new Qwen2(file, config, backend, ownsFile),
            "deepseek2" => new DeepSeek2(file, config, backend, ownsFile),
            string other => throw new NotSupportedException(
                $"{file.Path}: architecture '{other}' is not supported; Fathom runs {string.Join(", ", Architectures)}."),
        };
    }
}
