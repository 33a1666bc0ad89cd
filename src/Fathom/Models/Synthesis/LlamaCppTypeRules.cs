using Fathom.Quants;

namespace Fathom.Models.Synthesis;

/// <summary>
/// The per-tensor type choices of llama.cpp's quantizer (<c>llama_tensor_get_type</c> in <c>llama-quant.cpp</c>) that
/// synthetic models of real shapes need: the Q4_K_M mix and the fallback for rows that are not a whole number of the
/// wanted type's blocks. Norms, biases and the MoE router are never quantized and are not covered here.
/// </summary>
public static class LlamaCppTypeRules
{
    /// <summary>
    /// The type llama.cpp's quantizer writes when a row of <paramref name="rowLength"/> values is not a whole number of
    /// <paramref name="wanted"/>'s blocks: the ternary types fall back to Q4_0, the 256-block IQ types, Q2_K and Q3_K
    /// to IQ4_NL, Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0; if even that does not divide the row, F16.
    /// (DeepSeek-V2-Lite's 1408-wide expert rows and 10944-wide dense rows are such rows.)
    /// </summary>
    public static GgmlType FitToRow(GgmlType wanted, long rowLength)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rowLength, 1);
        if (rowLength % GgmlTypes.Layout(wanted).BlockSize == 0) return wanted;
        GgmlType fallback = wanted switch
        {
            GgmlType.TQ1_0 or GgmlType.TQ2_0 => GgmlType.Q4_0,
            GgmlType.IQ2_XXS or GgmlType.IQ2_XS or GgmlType.IQ2_S or GgmlType.IQ3_XXS or GgmlType.IQ3_S or GgmlType.IQ1_S
                or GgmlType.IQ1_M or GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.IQ4_XS => GgmlType.IQ4_NL,
            GgmlType.Q4_K => GgmlType.Q5_0,
            GgmlType.Q5_K => GgmlType.Q5_1,
            GgmlType.Q6_K => GgmlType.Q8_0,
            _ => throw new ArgumentException($"llama.cpp has no fallback for {wanted} rows of {rowLength} values"),
        };
        return rowLength % GgmlTypes.Layout(fallback).BlockSize == 0 ? fallback : GgmlType.F16;
    }

    /// <summary>
    /// llama.cpp's "more bits" layers of a mix: the first and last eighth of the layers and every third layer between.
    /// </summary>
    public static bool UseMoreBits(int layer, int layers) =>
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;

    /// <summary>
    /// The Q4_K_M type of a weight tensor (before <see cref="FitToRow"/>) of a model with <paramref name="layers"/>
    /// blocks: Q4_K, except <c>output</c> (Q6_K), and <c>attn_v</c> and every <c>ffn_down</c> (dense, routed and shared
    /// experts) in the <see cref="UseMoreBits"/> layers (Q6_K). <c>token_embd</c> stays Q4_K. This is llama.cpp's rule
    /// for models without 8 experts; the Mixtral-only (8-expert) and Falcon-only branches are left out.
    /// </summary>
    public static GgmlType Q4KMedium(string tensorName, int layers)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        if (tensorName == "output.weight") return GgmlType.Q6_K;
        if (tensorName.Contains("attn_v.weight", StringComparison.Ordinal) || tensorName.Contains("ffn_down", StringComparison.Ordinal))
        {
            // llama.cpp counts attn_v tensors in file order, which for one per block is the block index.
            int layer = BlueprintTensor.LayerOf(tensorName) ?? throw new ArgumentException($"'{tensorName}' names no block");
            return UseMoreBits(layer, layers) ? GgmlType.Q6_K : GgmlType.Q4_K;
        }
        return GgmlType.Q4_K;
    }
}
