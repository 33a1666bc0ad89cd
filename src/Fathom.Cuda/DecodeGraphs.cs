using Fathom.Cuda.Driver;

namespace Fathom.Cuda;

/// <summary>
/// Decode steps recorded as CUDA graphs, and the check that a new step repeats one of them. A step is described by
/// the words of everything it queues, in order: each kernel launch's function, grid, block, shared memory and
/// parameter slots (device addresses, sizes), and each copy of host data (destination, pinned source, bytes). The
/// values that differ from step to step (the position, the token id) are not among them: kernels read them from
/// device memory that the step's first copy fills. While <see cref="Mode"/> is <see cref="StepMode.Checking"/> the
/// launches are compared with every kept recording instead of queued; a step whose words equal a recording's, all
/// of them, is that recording's graph run again unchanged.
/// </summary>
internal sealed class DecodeGraphs(CudaContext context) : ILaunchFilter, IDisposable
{
    /// <summary>Recordings kept (two sessions decoding in turn keep one each); the oldest goes first.</summary>
    public const int Kept = 4;

    private readonly List<Recording> _recordings = [];
    private ulong[] _words = new ulong[8192];
    private int _count; // words recorded, or checked, so far in this step
    private int _alive; // while checking: a bit per recording that still matches
    // Where each recording stopped matching in this check (-1: still matches), for Miss.
    private readonly int[] _divergedAt = new int[Kept];
    private readonly ulong[] _divergedWord = new ulong[Kept];

    public StepMode Mode { get; private set; }

    /// <summary>Whether the step did something a graph cannot repeat (a host copy of its own, a read-back, cuBLAS).</summary>
    public bool Poisoned => PoisonedBy is not null;

    /// <summary>What made the step unrepeatable, or null.</summary>
    public string? PoisonedBy { get; private set; }

    /// <summary>Why the last few failed checks or unkept recordings failed, oldest first (for tests and diagnostics).</summary>
    public IReadOnlyList<string> Misses => _misses;

    private readonly List<string> _misses = [];

    private void Missed(string why)
    {
        if (_misses.Count == 16) _misses.RemoveAt(0);
        _misses.Add(why);
    }

    public int Count => _recordings.Count;

    public void BeginRecording() => Begin(StepMode.Recording);

    public void BeginChecking()
    {
        Begin(StepMode.Checking);
        _alive = (1 << _recordings.Count) - 1;
        Array.Fill(_divergedAt, -1);
    }

    private void Begin(StepMode mode)
    {
        Mode = mode;
        _count = 0;
        PoisonedBy = null;
    }

    /// <summary>The step cannot be replayed (while recording: its graph runs once and is not kept).</summary>
    public void Poison(string reason)
    {
        if (Mode == StepMode.Direct) return;
        PoisonedBy ??= reason;
        _alive = 0;
    }

    public bool Admit(IntPtr function, uint gridX, uint gridY, uint blockX, uint sharedBytes, ReadOnlySpan<ulong> arguments)
    {
        Span<ulong> head = [1, (ulong)function, gridX | (ulong)gridY << 32, blockX | (ulong)sharedBytes << 32, (ulong)arguments.Length];
        Observe(head);
        Observe(arguments);
        return Mode != StepMode.Checking;
    }

    /// <summary>A copy of <paramref name="bytes"/> from pinned host memory at <paramref name="source"/> to <paramref name="destination"/>.</summary>
    public void ObserveCopy(ulong destination, ulong source, long bytes)
    {
        Span<ulong> words = [2, destination, source, (ulong)bytes];
        Observe(words);
    }

    private void Observe(ReadOnlySpan<ulong> words)
    {
        if (Mode == StepMode.Recording)
        {
            if (_words.Length - _count < words.Length) Array.Resize(ref _words, Math.Max(2 * _words.Length, _count + words.Length));
            words.CopyTo(_words.AsSpan(_count));
        }
        else if (Mode == StepMode.Checking)
        {
            for (int i = 0; i < _recordings.Count; i++)
            {
                if ((_alive & (1 << i)) == 0) continue;
                ulong[] recorded = _recordings[i].Words;
                if (recorded.Length - _count >= words.Length && words.SequenceEqual(recorded.AsSpan(_count, words.Length))) continue;
                _alive &= ~(1 << i);
                int at = 0;
                while (at < words.Length && _count + at < recorded.Length && recorded[_count + at] == words[at]) at++;
                _divergedAt[i] = _count + at;
                _divergedWord[i] = at < words.Length ? words[at] : 0;
            }
        }
        _count += words.Length;
    }

    /// <summary>Ends a recording: its graph (instantiated, now owned here) is kept for replay unless the step was poisoned.</summary>
    public void EndRecording(IntPtr exec)
    {
        Mode = StepMode.Direct;
        if (Poisoned)
        {
            Missed($"recording not kept: {PoisonedBy}");
            context.Driver.DestroyGraphExec(exec); // freed once its launch completes
            return;
        }
        if (_recordings.Count == Kept)
        {
            context.Driver.DestroyGraphExec(_recordings[0].Exec);
            _recordings.RemoveAt(0);
        }
        _recordings.Add(new Recording(_words.AsSpan(0, _count).ToArray(), exec));
    }

    /// <summary>Ends a check: the graph of the recording the step repeated, or zero when it repeated none.</summary>
    public IntPtr EndChecking()
    {
        Mode = StepMode.Direct;
        for (int i = 0; i < _recordings.Count; i++)
            if ((_alive & (1 << i)) != 0 && _recordings[i].Words.Length == _count) return _recordings[i].Exec;
        var why = new System.Text.StringBuilder(Poisoned ? $"poisoned: {PoisonedBy}" : $"{_count} words");
        for (int i = 0; i < _recordings.Count && !Poisoned; i++)
        {
            ulong[] recorded = _recordings[i].Words;
            why.Append($"; recording {i} ({recorded.Length} words) ");
            if (_divergedAt[i] < 0) why.Append("is longer");
            else why.Append($"differs at word {_divergedAt[i]}: {(_divergedAt[i] < recorded.Length ? recorded[_divergedAt[i]] : 0):X} then, {_divergedWord[i]:X} now");
        }
        Missed(why.ToString());
        return IntPtr.Zero;
    }

    /// <summary>Leaves recording or checking without keeping anything (the pass failed).</summary>
    public void Abandon() => Mode = StepMode.Direct;

    public void Dispose()
    {
        foreach (Recording recording in _recordings) context.Driver.DestroyGraphExec(recording.Exec);
        _recordings.Clear();
    }

    private sealed record Recording(ulong[] Words, IntPtr Exec);
}

/// <summary>How the operations of a forward pass are handled.</summary>
internal enum StepMode
{
    /// <summary>Queued one by one.</summary>
    Direct,
    /// <summary>Queued into a graph being captured.</summary>
    Recording,
    /// <summary>Compared with recorded steps, not queued.</summary>
    Checking,
}
