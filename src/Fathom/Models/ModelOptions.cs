using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>How to run a model.</summary>
public sealed record ModelOptions
{
    /// <summary>CPU threads; 0 means one per logical processor (the <c>-t</c> option).</summary>
    public int Threads { get; init; }

    /// <summary>
    /// Makes the backend the model computes with (the model disposes it); null means the CPU backend with
    /// <see cref="Threads"/> threads. Other backends (Fathom.Cuda's) plug in here, so this library needs no
    /// reference to them.
    /// </summary>
    public Func<ModelOptions, IComputeBackend>? Backend { get; init; }
}
