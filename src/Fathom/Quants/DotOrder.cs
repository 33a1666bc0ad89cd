namespace Fathom.Quants;

/// <summary>
/// The order in which a float dot product (F16, BF16 or F32 weights) adds its products: the two orders ggml's AVX2
/// build uses, so that Fathom's sums are its sums bit for bit. It matters most for half-precision models: both engines
/// round activations to the half format before each product, and a float an ulp apart next to a half-precision
/// rounding boundary becomes a whole half step in the next layer. F16 and BF16 use <see cref="LlamafileGemm"/> unless
/// told otherwise; F32 keeps its own faster order unless told (<see cref="WeightFormat.WithDotOrder"/>).
/// </summary>
public enum DotOrder
{
    /// <summary>
    /// llamafile's tinyBLAS, which ggml's <c>MUL_MAT</c> runs for batches: one 8-lane fused multiply-add accumulator
    /// over the row in steps of 8, then the lanes added as halves (i, i+4), pairs (i, i+2) and the last two.
    /// Fathom uses it for every token count, so a prompt and a decoded token get the same bits.
    /// </summary>
    LlamafileGemm,

    /// <summary>
    /// ggml's <c>ggml_vec_dot_f16</c> / <c>ggml_vec_dot_bf16</c>, which <c>MUL_MAT_ID</c> (routed experts) and
    /// one-token <c>MUL_MAT</c> run: four 8-lane accumulators over steps of 32 (F16: fused multiply-add; BF16:
    /// multiply, then add), reduced to one vector and then to a float, the products past the last step of 32 added in double.
    /// </summary>
    GgmlVecDot,
}
