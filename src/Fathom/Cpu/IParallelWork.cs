namespace Fathom.Cpu;

/// <summary>A job split into numbered pieces that <see cref="WorkerPool"/> threads claim one at a time.</summary>
internal interface IParallelWork
{
    /// <summary>Runs piece <paramref name="index"/> on worker <paramref name="worker"/> (0 is the calling thread).</summary>
    void Execute(int index, int worker);
}
