using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Models;

/// <summary>One tensor as <c>fathom info</c> lists it.</summary>
public sealed record TensorSummary(string Name, long[] Shape, GgmlType Type, long Parameters, long Bytes, TensorGroup Group, int FileIndex);

/// <summary>Parameters and bytes of a set of tensors (a group or a type).</summary>
public sealed record SizeSummary(string Label, int TensorCount, long Parameters, long Bytes)
{
    public double BitsPerWeight => Parameters == 0 ? 0 : Bytes * 8.0 / Parameters;
}

/// <summary>The tokenizer as the metadata describes it.</summary>
public sealed record TokenizerSummary(string? Model, string? Pre, int VocabSize, int MergeCount, long? BosTokenId, long? EosTokenId, bool HasChatTemplate);

/// <summary>
/// What a GGUF model is: files, architecture, hyperparameters, tokenizer, tensors and their sizes by group and by type.
/// Hyperparameters that cannot be read (an unsupported architecture, inconsistent metadata) are reported, not thrown,
/// so the rest of the summary still describes the file.
/// </summary>
public sealed class ModelSummary
{
    public required IReadOnlyList<GgufFilePart> Files { get; init; }
    public required uint Version { get; init; }
    public required int MetadataCount { get; init; }
    public string? Architecture { get; init; }
    public string? Name { get; init; }
    public ModelHyperparameters? Hyperparameters { get; init; }
    public string? HyperparametersError { get; init; }
    public TokenizerSummary? Tokenizer { get; init; }
    public required IReadOnlyList<TensorSummary> Tensors { get; init; }

    /// <summary>Sizes per <see cref="TensorGroup"/>, in enum order, non-empty groups only.</summary>
    public required IReadOnlyList<SizeSummary> Groups { get; init; }

    /// <summary>Sizes per ggml type, largest first.</summary>
    public required IReadOnlyList<SizeSummary> Types { get; init; }

    public long TotalParameters => Tensors.Sum(t => t.Parameters);
    public long TotalBytes => Tensors.Sum(t => t.Bytes);
    public double BitsPerWeight => TotalParameters == 0 ? 0 : TotalBytes * 8.0 / TotalParameters;

    public static ModelSummary FromFile(GgufFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        GgufMetadata m = file.Metadata;
        ModelHyperparameters? hp = null;
        string? hpError = null;
        m.TryGetString(GgufKeys.General.Architecture, out string? arch);
        if (arch is null) hpError = $"{GgufKeys.General.Architecture} is missing";
        else
        {
            try
            {
                hp = ModelHyperparameters.FromMetadata(m);
            }
            catch (GgufFormatException e)
            {
                hpError = e.Message;
            }
        }
        m.TryGetString(GgufKeys.General.Name, out string? name);

        var tensors = file.Tensors
            .Select(t => new TensorSummary(t.Name, t.Shape, t.Type, t.ElementCount, t.ByteSize, TensorGroups.Classify(t.Name), t.FileIndex))
            .ToList();
        var groups = tensors.GroupBy(t => t.Group).OrderBy(g => g.Key)
            .Select(g => new SizeSummary(g.Key.ToString(), g.Count(), g.Sum(t => t.Parameters), g.Sum(t => t.Bytes)))
            .ToList();
        var types = tensors.GroupBy(t => t.Type).OrderByDescending(g => g.Sum(t => t.Bytes))
            .Select(g => new SizeSummary(g.Key.ToString(), g.Count(), g.Sum(t => t.Parameters), g.Sum(t => t.Bytes)))
            .ToList();

        return new ModelSummary
        {
            Files = file.Parts,
            Version = file.Version,
            MetadataCount = m.Count,
            Architecture = arch,
            Name = name,
            Hyperparameters = hp,
            HyperparametersError = hpError,
            Tokenizer = ReadTokenizer(m),
            Tensors = tensors,
            Groups = groups,
            Types = types,
        };
    }

    private static TokenizerSummary? ReadTokenizer(GgufMetadata m)
    {
        bool hasModel = m.TryGetString(GgufKeys.Tokenizer.Model, out string? model);
        bool hasTokens = m.ContainsKey(GgufKeys.Tokenizer.Tokens);
        if (!hasModel && !hasTokens) return null;
        m.TryGetString(GgufKeys.Tokenizer.Pre, out string? pre);
        int vocab = hasTokens ? m.GetArrayLength(GgufKeys.Tokenizer.Tokens) : 0;
        int merges = m.ContainsKey(GgufKeys.Tokenizer.Merges) ? m.GetArrayLength(GgufKeys.Tokenizer.Merges) : 0;
        long? bos = m.TryGetInt64(GgufKeys.Tokenizer.BosTokenId, out long b) ? b : null;
        long? eos = m.TryGetInt64(GgufKeys.Tokenizer.EosTokenId, out long e) ? e : null;
        return new TokenizerSummary(model, pre, vocab, merges, bos, eos, m.ContainsKey(GgufKeys.Tokenizer.ChatTemplate));
    }
}
