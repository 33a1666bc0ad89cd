namespace Fathom.Runtime.Sampling;

/// <summary>
/// A backend that selects tokens where its logits are (a GPU): <see cref="SelectTokens"/> reads a row of logits it
/// holds (part of an attached buffer, as a forward pass leaves them) and returns only what a sampler needs, instead
/// of the whole row. Its results equal <see cref="HostTokenSelection.Select"/>'s, the CPU's reference.
/// </summary>
public interface ITokenSelectingBackend : IComputeBackend
{
    /// <summary>Whether <see cref="SelectTokens"/> is to be used (a backend may be told not to, e.g. by an environment variable).</summary>
    bool SelectsTokens { get; }

    /// <summary>
    /// Applies <paramref name="request"/>'s penalties to <paramref name="logits"/> in place (a later
    /// <see cref="IComputeBackend.ReadToHost"/> sees the penalized row), then selects into <paramref name="result"/>
    /// as <see cref="HostTokenSelection.Select"/> does.
    /// </summary>
    void SelectTokens(Span<float> logits, scoped in TokenSelectionRequest request, TokenCandidates result);
}
