using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>Opens a GGUF model and builds the architecture its <c>general.architecture</c> names.</summary>
public static class ModelLoader
{
    /// <summary>Opens <paramref name="path"/> (the first part of a split model) and loads it (on the CPU unless options say otherwise); the model owns the file.</summary>
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

    /// <summary>
    /// Loads a model from an open file on the backend <see cref="ModelOptions.Backend"/> makes (the CPU by default);
    /// the caller keeps the file open while the model is used.
    /// </summary>
    public static Model Load(GgufFile file, ModelOptions? options = null, bool ownsFile = false)
    {
        options ??= new ModelOptions();
        IComputeBackend backend = options.Backend?.Invoke(options) ?? new CpuBackend(options.Threads);
        try
        {
            return Load(file, backend, ownsFile, options);
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    /// <summary>Loads a model onto a given backend (the model disposes it); of <paramref name="options"/>, what is not about the backend applies.</summary>
    public static Model Load(GgufFile file, IComputeBackend backend, bool ownsFile = false, ModelOptions? options = null)
    {
        // Reading the hyperparameters also rejects architectures Fathom does not run, naming the key.
        ModelHyperparameters config = ModelHyperparameters.FromMetadata(file.Metadata);
        (backend as Placement.IWeightPlacement)?.PlaceWeights(file, config);
        return config.Architecture switch
        {
            ModelArchitecture.Llama => new Llama(file, config, backend, ownsFile),
            ModelArchitecture.Qwen2 => new Qwen2(file, config, backend, ownsFile),
            ModelArchitecture.DeepSeek2 => new DeepSeek2(file, config, backend, ownsFile, options?.DecompressFusedKvB ?? false),
            _ => throw new NotSupportedException($"{file.Path}: architecture {config.Architecture} has no forward pass"),
        };
    }
}
