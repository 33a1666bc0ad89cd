using System.Text.Json;
using System.Text.Json.Nodes;
using Fathom.Models;

namespace Fathom.Cli.Commands;

/// <summary>The <c>--json</c> form of <c>fathom info</c>: one object, built as a JsonNode so it needs no reflection.</summary>
public static class InfoJson
{
    public static readonly JsonSerializerOptions Options = new() { WriteIndented = true };

    public static JsonObject Build(ModelSummary s) => new()
    {
        ["files"] = Array(s.Files.Select(f => new JsonObject
        {
            ["path"] = f.Path,
            ["bytes"] = f.Length,
            ["ggufVersion"] = f.Version,
            ["alignment"] = f.Alignment,
            ["dataOffset"] = f.DataOffset,
            ["tensorCount"] = f.TensorCount,
        })),
        ["ggufVersion"] = s.Version,
        ["architecture"] = s.Architecture,
        ["name"] = s.Name,
        ["metadataCount"] = s.MetadataCount,
        ["hyperparameters"] = s.Hyperparameters is { } hp ? Hyperparameters(hp) : null,
        ["hyperparametersError"] = s.HyperparametersError,
        ["tokenizer"] = s.Tokenizer is { } t ? new JsonObject
        {
            ["model"] = t.Model,
            ["pre"] = t.Pre,
            ["vocabSize"] = t.VocabSize,
            ["mergeCount"] = t.MergeCount,
            ["bosTokenId"] = t.BosTokenId,
            ["eosTokenId"] = t.EosTokenId,
            ["hasChatTemplate"] = t.HasChatTemplate,
        } : null,
        ["tensors"] = Array(s.Tensors.Select(x => new JsonObject
        {
            ["name"] = x.Name,
            ["shape"] = Array(x.Shape.Select(d => (JsonNode)d)),
            ["type"] = x.Type.ToString(),
            ["parameters"] = x.Parameters,
            ["bytes"] = x.Bytes,
            ["group"] = x.Group.ToString(),
            ["file"] = x.FileIndex,
        })),
        ["groups"] = Sizes(s.Groups, "group"),
        ["types"] = Sizes(s.Types, "type"),
        ["totalParameters"] = s.TotalParameters,
        ["totalBytes"] = s.TotalBytes,
        ["bitsPerWeight"] = Math.Round(s.BitsPerWeight, 4),
    };

    private static JsonObject Hyperparameters(ModelHyperparameters hp)
    {
        var o = new JsonObject
        {
            ["architecture"] = hp.Architecture.GgufName(),
            ["blockCount"] = hp.BlockCount,
            ["embeddingLength"] = hp.EmbeddingLength,
            ["headCount"] = hp.HeadCount,
            ["headCountKv"] = hp.HeadCountKv,
            ["keyLength"] = hp.KeyLength,
            ["valueLength"] = hp.ValueLength,
            ["feedForwardLength"] = hp.FeedForwardLength,
            ["contextLength"] = hp.ContextLength,
            ["vocabSize"] = hp.VocabSize,
            ["rmsNormEpsilon"] = hp.RmsNormEpsilon,
            ["rope"] = new JsonObject
            {
                ["dimensionCount"] = hp.Rope.DimensionCount,
                ["freqBase"] = hp.Rope.FreqBase,
                ["scalingType"] = hp.Rope.ScalingType.ToString(),
                ["scalingFactor"] = hp.Rope.ScalingFactor,
                ["originalContextLength"] = hp.Rope.OriginalContextLength,
                ["yarnLogMultiplier"] = hp.Rope.YarnLogMultiplier,
            },
        };
        if (hp.Mla is { } mla)
        {
            o["mla"] = new JsonObject
            {
                ["qLoraRank"] = mla.QLoraRank,
                ["kvLoraRank"] = mla.KvLoraRank,
                ["qkNopeHeadDim"] = mla.QkNopeHeadDim,
                ["qkRopeHeadDim"] = mla.QkRopeHeadDim,
                ["vHeadDim"] = mla.VHeadDim,
                ["absorbedLayout"] = mla.AbsorbedLayout,
            };
        }
        if (hp.Moe is { } moe)
        {
            o["moe"] = new JsonObject
            {
                ["expertCount"] = moe.ExpertCount,
                ["expertUsedCount"] = moe.ExpertUsedCount,
                ["sharedExpertCount"] = moe.SharedExpertCount,
                ["expertFeedForwardLength"] = moe.ExpertFeedForwardLength,
                ["leadingDenseBlockCount"] = moe.LeadingDenseBlockCount,
                ["gatingFunction"] = moe.GatingFunction.ToString(),
                ["weightsNormalized"] = moe.WeightsNormalized,
                ["weightsScale"] = moe.WeightsScale,
                ["groupCount"] = moe.GroupCount,
                ["groupUsedCount"] = moe.GroupUsedCount,
            };
        }
        return o;
    }

    private static JsonArray Sizes(IEnumerable<SizeSummary> sizes, string label) => Array(sizes.Select(g => new JsonObject
    {
        [label] = g.Label,
        ["tensorCount"] = g.TensorCount,
        ["parameters"] = g.Parameters,
        ["bytes"] = g.Bytes,
        ["bitsPerWeight"] = Math.Round(g.BitsPerWeight, 4),
    }));

    private static JsonArray Array(IEnumerable<JsonNode?> items) => new([.. items]);
}
