using System.Globalization;

namespace Fathom.Models;

/// <summary>What part of a transformer a tensor belongs to, for size summaries and placement decisions.</summary>
public enum TensorGroup
{
    Embeddings,
    Attention,
    DenseFeedForward,
    RoutedExperts,
    SharedExperts,

    /// <summary>The MoE router (<c>ffn_gate_inp</c>, <c>exp_probs_b</c>) and every normalisation weight.</summary>
    RouterAndNorms,

    /// <summary>The output projection (<c>output.weight</c>, the LM head).</summary>
    Output,

    /// <summary>Anything else, e.g. DeepSeek's multi-token-prediction (<c>nextn</c>) tensors.</summary>
    Other,
}

/// <summary>Classifies llama.cpp's tensor names (<c>token_embd.weight</c>, <c>blk.N.attn_q.weight</c>, …).</summary>
public static class TensorGroups
{
    public static TensorGroup Classify(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!TryParseBlock(name, out _, out string local))
        {
            string stem = Stem(name);
            return stem switch
            {
                "token_embd" => TensorGroup.Embeddings,
                "output" => TensorGroup.Output,
                "rope_freqs" => TensorGroup.Attention,
                _ when stem.EndsWith("_norm", StringComparison.Ordinal) => TensorGroup.RouterAndNorms,
                _ => TensorGroup.Other,
            };
        }

        string layerStem = Stem(local);
        if (layerStem.StartsWith("nextn", StringComparison.Ordinal)) return TensorGroup.Other;
        if (layerStem.Contains("norm", StringComparison.Ordinal)) return TensorGroup.RouterAndNorms;
        if (layerStem is "ffn_gate_inp" or "exp_probs_b" or "ffn_exp_probs_b") return TensorGroup.RouterAndNorms;
        if (layerStem.StartsWith("attn_", StringComparison.Ordinal)) return TensorGroup.Attention;
        if (layerStem.StartsWith("ffn_", StringComparison.Ordinal))
        {
            if (layerStem.EndsWith("_exps", StringComparison.Ordinal)) return TensorGroup.RoutedExperts;
            if (layerStem.EndsWith("_shexp", StringComparison.Ordinal)) return TensorGroup.SharedExperts;
            return layerStem is "ffn_gate" or "ffn_up" or "ffn_down" ? TensorGroup.DenseFeedForward : TensorGroup.Other;
        }
        return TensorGroup.Other;
    }

    /// <summary>Splits <c>blk.N.rest</c> into the block index and the rest; false for tensors outside blocks.</summary>
    public static bool TryParseBlock(string name, out int block, out string rest)
    {
        block = -1;
        rest = name;
        if (!name.StartsWith("blk.", StringComparison.Ordinal)) return false;
        int dot = name.IndexOf('.', 4);
        if (dot < 0 || !int.TryParse(name.AsSpan(4, dot - 4), NumberStyles.None, CultureInfo.InvariantCulture, out block)) return false;
        rest = name[(dot + 1)..];
        return true;
    }

    /// <summary>The name without its <c>.weight</c>/<c>.bias</c>/<c>.scale</c> suffix.</summary>
    private static string Stem(string name)
    {
        int dot = name.IndexOf('.');
        return dot < 0 ? name : name[..dot];
    }
}
