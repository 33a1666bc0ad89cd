namespace Fathom.Runtime.Sampling;

/// <summary>
/// The token selection a caller makes over a single-session pass's logits right after the pass
/// (a model's ForwardSelect), told to the backend with the pass (<see cref="ForwardKey.Selection"/>)
/// so that a backend recording the pass may run the selection as the pass's last operations and have only the result
/// to copy back. Only selections without penalties qualify (penalties add host data that changes every step): the
/// arg-max, or the <see cref="Candidates"/> largest logits with the sum within <see cref="CutoffGap"/>. The default
/// describes none.
/// </summary>
public readonly record struct PassSelection
{
    /// <summary>Whether a selection follows the pass.</summary>
    public bool Selects { get; private init; }

    /// <summary>The arg-max (else <see cref="Candidates"/>).</summary>
    public bool Greedy { get; private init; }

    /// <summary>Candidates kept when not <see cref="Greedy"/>; 0 for the arg-max.</summary>
    public int Candidates { get; private init; }

    /// <summary>The candidates' cutoff gap (+0 for the arg-max, and for a request's −0).</summary>
    public float CutoffGap { get; private init; }

    /// <summary>The selection <paramref name="request"/> makes, or none when it penalizes logits first.</summary>
    public static PassSelection For(scoped in TokenSelectionRequest request)
    {
        if (request.Penalizes) return default;
        if (request.Greedy) return new PassSelection { Selects = true, Greedy = true };
        // + 0 turns a −0 gap into +0: equal selections are one value, bit for bit.
        return new PassSelection { Selects = true, Candidates = request.Candidates, CutoffGap = request.CutoffGap + 0f };
    }

    /// <summary>Whether this selection is the one <paramref name="request"/> asks for (none never is).</summary>
    public bool Answers(scoped in TokenSelectionRequest request) => Selects && this == For(request);
}
