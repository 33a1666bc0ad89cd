namespace Fathom.Models;

/// <summary>How to run a model.</summary>
public sealed record ModelOptions
{
    /// <summary>CPU threads; 0 means one per logical processor (the <c>-t</c> option).</summary>
    public int Threads { get; init; }
}
