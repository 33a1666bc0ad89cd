using Fathom.Gguf;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>
/// Looks up a model's tensors by llama.cpp name, checks their shapes against the hyperparameters and hands out
/// weights that stay in the file's memory map. Only small vectors (norms, biases, routing biases) are copied out,
/// into pinned arrays attached to <paramref name="backend"/> (a GPU keeps them on the device).
/// </summary>
public sealed unsafe class ModelTensors(GgufFile file, IComputeBackend? backend = null)
{
    public GgufFile File { get; } = file;

    public bool Has(string name) => File.TryGetTensor(name, out _);

    /// <summary>A 2-D weight of <paramref name="columns"/> × <paramref name="rows"/> (ggml order: row length first).</summary>
    public WeightMatrix Matrix(string name, long columns, long rows)
    {
        GgufTensorInfo t = Tensor(name, columns, rows);
        return WeightMatrix.InPlace(name, t.Type, File.GetTensorPointer(t), checked((int)rows), checked((int)columns));
    }

    public WeightMatrix? OptionalMatrix(string name, long columns, long rows) => Has(name) ? Matrix(name, columns, rows) : null;

    /// <summary>A 3-D weight [columns, rows, count] as <paramref name="count"/> matrices (experts, heads), no copy.</summary>
    public WeightMatrix[] Stack(string name, long columns, long rows, long count)
    {
        GgufTensorInfo t = Tensor(name, columns, rows, count);
        var all = WeightMatrix.InPlace(name, t.Type, File.GetTensorPointer(t), checked((int)(rows * count)), checked((int)columns));
        var parts = new WeightMatrix[count];
        for (int i = 0; i < count; i++) parts[i] = all.SliceRows(checked((int)(i * rows)), (int)rows, $"{name}[{i}]");
        return parts;
    }

    /// <summary>A 1-D tensor (norm weight, bias) decoded to floats.</summary>
    public float[] Vector(string name, long length)
    {
        GgufTensorInfo t = Tensor(name, length);
        float[] values = GC.AllocateArray<float>(checked((int)length), pinned: true);
        TypeTraits.For(t.Type).Dequantize(File.GetTensorData(t), values);
        backend?.Attach(values);
        return values;
    }

    public float[]? OptionalVector(string name, long length) => Has(name) ? Vector(name, length) : null;

    private GgufTensorInfo Tensor(string name, params long[] shape)
    {
        if (!File.TryGetTensor(name, out GgufTensorInfo? t))
            throw new GgufFormatException(File.Path, name, -1, "required tensor is missing");
        if (!t.Shape.SequenceEqual(shape))
            throw new GgufFormatException(File.Path, name, -1,
                $"shape [{string.Join(", ", t.Shape)}] does not match the hyperparameters' [{string.Join(", ", shape)}]");
        if (!TypeTraits.IsSupported(t.Type))
            throw new GgufFormatException(File.Path, name, -1, $"weight type {t.Type} is not supported");
        return t;
    }
}
