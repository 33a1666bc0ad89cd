namespace Fathom.Models;

/// <summary>
/// The estimate of weight bytes one decoded token reads from one tensor: all of it, except <c>token_embd</c>, of which
/// one row is read (all of it when the model has no <c>output</c> tensor and reuses the embedding as its output
/// matrix), and the routed-expert tensors (<c>*_exps</c>), of which a token reads <c>expert_used_count</c> of
/// <c>expert_count</c> slices. Router, shared experts and norms count in full.
/// </summary>
public static class TokenWeightBytes
{
    public static long Of(string name, long byteSize, long rowBytes, bool tiedOutput, int expertCount, int expertUsedCount)
    {
        if (name == "token_embd.weight") return tiedOutput ? byteSize : rowBytes;
        // Every expert's slice has the same size, so the division is exact.
        if (IsRoutedExperts(name) && expertCount > 0) return checked(byteSize / expertCount * expertUsedCount);
        return byteSize;
    }

    public static bool IsRoutedExperts(string name) => name.Contains("_exps.", StringComparison.Ordinal);
}
