namespace Fathom.Runtime;

/// <summary>
/// What decides a single-session forward pass's operations besides the backend's own state and the values that vary
/// from step to step (the positions and the token ids): the session (<see cref="InferenceSession.Id"/>: its cache and
/// scratch buffers), the pass's rows, which rows get logits, and where the logits go. Two passes with equal keys run
/// the same model code over the same buffers, so a backend that verified one pass's operations may repeat them for
/// the other (<see cref="IComputeBackend.BeginForward(int, int, bool, in ForwardKey, ReadOnlySpan{int})"/>) as long as
/// nothing of its own changed in between. The default key (<see cref="IsKnown"/> false) describes no pass.
/// </summary>
/// <param name="Session">The session's <see cref="InferenceSession.Id"/>; 0 for no key.</param>
/// <param name="Tokens">Rows of the pass.</param>
/// <param name="OutputRows">Which rows get logits (the model's own code for its choice).</param>
/// <param name="Logits">The address of the first logit the pass writes.</param>
/// <param name="LogitsLength">How many values the logits span holds.</param>
/// <param name="Selection">The token selection the caller makes over the logits right after the pass, if any (a backend may run it as the pass's end).</param>
public readonly record struct ForwardKey(long Session, int Tokens, int OutputRows, nint Logits, int LogitsLength, Sampling.PassSelection Selection = default)
{
    /// <summary>Whether the key describes a pass (a session is named).</summary>
    public bool IsKnown => Session != 0;
}
