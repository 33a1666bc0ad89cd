using System.Globalization;
using System.Security.Cryptography;
using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Models.Synthesis;

/// <summary>One tensor of a <see cref="ModelBlueprint"/>: name, shape in ggml order (row length first) and type.</summary>
public sealed record BlueprintTensor(string Name, long[] Shape, GgmlType Type)
{
    public long RowLength => Shape[0];

    public long RowCount => Shape.Skip(1).Aggregate(1L, (a, b) => checked(a * b));

    public long RowBytes => GgmlTypes.Layout(Type).RowBytes(RowLength);

    public long ByteSize => checked(RowBytes * RowCount);

    /// <summary>The block index of a <c>blk.N.</c> tensor; null for tensors outside the blocks (embedding, output, norms).</summary>
    public int? Layer => LayerOf(Name);

    /// <summary>The block index of a llama.cpp tensor name <c>blk.N.…</c>, or null.</summary>
    public static int? LayerOf(string name)
    {
        if (!name.StartsWith("blk.", StringComparison.Ordinal)) return null;
        int end = name.IndexOf('.', 4);
        return end > 4 && int.TryParse(name.AsSpan(4, end - 4), NumberStyles.None, CultureInfo.InvariantCulture, out int layer) ? layer : null;
    }
}

/// <summary>
/// Everything about a model file except its weight values: the metadata (hyperparameters, tokenizer) and the tensor
/// table. Made from a <see cref="SyntheticModelSpec"/> or copied from a real GGUF's header, it is what
/// <see cref="ModelSynthesizer"/> fills with random weights, so a synthetic model can have exactly a real model's
/// shapes and types. Its size is known without building it.
/// </summary>
public sealed class ModelBlueprint
{
    public ModelBlueprint(IEnumerable<KeyValuePair<string, GgufValue>> metadata, IEnumerable<BlueprintTensor> tensors)
    {
        Metadata = [.. metadata];
        Tensors = [.. tensors];
        var keys = new Dictionary<string, GgufValue>(StringComparer.Ordinal);
        foreach (var (key, value) in Metadata) keys[key] = value;
        _metadata = keys;
        Architecture = keys.TryGetValue(GgufKeys.General.Architecture, out GgufValue? a) ? a.AsString()
            : throw new ArgumentException("the blueprint has no general.architecture");
        Layers = keys.TryGetValue(GgufKeys.Arch.BlockCount(Architecture), out GgufValue? b) ? checked((int)b.AsInt64())
            : throw new ArgumentException($"the blueprint has no {GgufKeys.Arch.BlockCount(Architecture)}");
        LeadingDenseLayers = keys.TryGetValue(GgufKeys.Arch.LeadingDenseBlockCount(Architecture), out GgufValue? d) ? checked((int)d.AsInt64()) : 0;
        ExpertCount = keys.TryGetValue(GgufKeys.Arch.ExpertCount(Architecture), out GgufValue? e) ? checked((int)e.AsInt64()) : 0;
        ExpertUsedCount = keys.TryGetValue(GgufKeys.Arch.ExpertUsedCount(Architecture), out GgufValue? u) ? checked((int)u.AsInt64()) : 0;
    }

    private readonly Dictionary<string, GgufValue> _metadata;

    public IReadOnlyList<KeyValuePair<string, GgufValue>> Metadata { get; }

    public IReadOnlyList<BlueprintTensor> Tensors { get; }

    public string Architecture { get; }

    /// <summary><c>{arch}.block_count</c>.</summary>
    public int Layers { get; }

    /// <summary><c>{arch}.leading_dense_block_count</c> (0 when absent): MoE models' leading dense-FFN blocks.</summary>
    public int LeadingDenseLayers { get; }

    public int ExpertCount { get; }

    public int ExpertUsedCount { get; }

    /// <summary>Bytes of every tensor: the file's data section without alignment padding.</summary>
    public long ByteSize => Tensors.Aggregate(0L, (sum, t) => checked(sum + t.ByteSize));

    public GgufValue this[string key] => _metadata[key];

    /// <summary>Copies the metadata and tensor table of a GGUF file (all parts of a split model); no tensor data is read.</summary>
    public static ModelBlueprint FromGgufHeader(GgufFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        // A split model's per-part keys describe the parts, not the model; the synthetic copy is one file.
        var metadata = file.Metadata.Where(p => !p.Key.StartsWith("split.", StringComparison.Ordinal));
        return new ModelBlueprint(metadata, file.Tensors.Select(t => new BlueprintTensor(t.Name, (long[])t.Shape.Clone(), t.Type)));
    }

    /// <summary>The blueprint of a synthetic model spec: the metadata and tensors <see cref="ModelSynthesizer"/> writes for it.</summary>
    public static ModelBlueprint FromSpec(SyntheticModelSpec spec) => ModelSynthesizer.Blueprint(spec);

    /// <summary>
    /// The same model with only its first <paramref name="layers"/> blocks: the tensors of later blocks are dropped and
    /// <c>block_count</c> (and <c>leading_dense_block_count</c>, if it exceeds it) is lowered.
    /// </summary>
    public ModelBlueprint WithLayers(int layers)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(layers, Layers);
        string blockCount = GgufKeys.Arch.BlockCount(Architecture), dense = GgufKeys.Arch.LeadingDenseBlockCount(Architecture);
        var metadata = Metadata.Select(p =>
            p.Key == blockCount ? KeyValuePair.Create(p.Key, GgufValue.FromUInt32((uint)layers))
            : p.Key == dense && LeadingDenseLayers > layers ? KeyValuePair.Create(p.Key, GgufValue.FromUInt32((uint)layers))
            : p);
        return new ModelBlueprint(metadata, Tensors.Where(t => t.Layer is not int layer || layer < layers));
    }

    /// <summary>
    /// Estimated weight bytes one generated token reads from <paramref name="tensor"/> (see
    /// <see cref="TokenWeightBytes"/>, which applies the same rule to a file).
    /// </summary>
    public long BytesPerToken(BlueprintTensor tensor) =>
        TokenWeightBytes.Of(tensor.Name, tensor.ByteSize, tensor.RowBytes, tiedOutput: !Tensors.Any(t => t.Name == "output.weight"), ExpertCount, ExpertUsedCount);

    /// <summary>A hex SHA-256 of the header this blueprint writes: equal for equal metadata, shapes and types.</summary>
    public string ContentHash()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var stream = new HashingStream(hash);
        ModelSynthesizer.HeaderWriter(this).WriteHeaderTo(stream);
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>A write-only stream that feeds a hash.</summary>
    private sealed class HashingStream(IncrementalHash hash) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => hash.AppendData(buffer, offset, count);
        public override void Write(ReadOnlySpan<byte> buffer) => hash.AppendData(buffer);
    }
}
