using Fathom.Cuda.Driver;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// Decode steps recorded as CUDA graphs, and the check that a new step repeats one of them. A step is described by
/// the words of everything it queues, in order: each kernel launch's function, grid, block, shared memory and
/// parameter slots (device addresses, sizes), each copy of host data (destination, pinned source, bytes), and the
/// copy of a token selection's result back to page-locked host memory that may end the step (destination, source, bytes). The
/// values that differ from step to step (the position, the token id) are not among them: kernels read them from
/// device memory that the step's first copy fills. While <see cref="Mode"/> is <see cref="StepMode.Checking"/> the
/// launches are compared with every kept recording instead of queued; a step whose words equal a recording's, all
/// of them, is that recording's graph run again unchanged. A recording that a check matched for a pass of a known
/// <see cref="ForwardKey"/>, while the backend's state (<see cref="StepState"/>) stayed as it was, is verified for that
/// key and state: a later pass with both equal issues the same words, so it may run the graph without the check
/// (<see cref="FindVerified"/>), once its position and token ids are written where the graph's copies read them.
/// </summary>
internal sealed class DecodeGraphs(CudaContext context) : ILaunchFilter, IDisposable
{
    /// <summary>Recordings kept (two sessions decoding in turn keep one each); the oldest goes first.</summary>
    public const int Kept = 4;

    private readonly List<StepRecording> _recordings = [];
    private ulong[] _words = new ulong[8192];
    private int _count; // words recorded, or checked, so far in this step
    // While recording: where the step's position and token ids are copied from, and whether other host data is.
    private ulong _positionSource, _tokenSource;
    private long _tokenBytes;
    private bool _otherHostData;
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
        (_positionSource, _tokenSource, _tokenBytes, _otherHostData) = (0, 0, 0, false);
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
        // A programmatic launch is another graph edge: a step recorded one way does not repeat the other.
        Span<ulong> head = [context is { ProgrammaticLaunches: true } ? 3UL : 1UL, (ulong)function, gridX | (ulong)gridY << 32, blockX | (ulong)sharedBytes << 32, (ulong)arguments.Length];
        Observe(head);
        Observe(arguments);
        return Mode != StepMode.Checking;
    }

    /// <summary>A copy of <paramref name="bytes"/> of <paramref name="input"/> from pinned host memory at <paramref name="source"/> to <paramref name="destination"/>.</summary>
    public void ObserveCopy(ulong destination, ulong source, long bytes, StepInput input)
    {
        Span<ulong> words = [2, destination, source, (ulong)bytes, (ulong)input];
        Observe(words);
        if (Mode != StepMode.Recording) return; // a check compares these words, the kind included
        switch (input)
        {
            case StepInput.Position when _positionSource == 0 && bytes == sizeof(int):
                _positionSource = source;
                break;
            case StepInput.Tokens when _tokenSource == 0:
                (_tokenSource, _tokenBytes) = (source, bytes);
                break;
            default:
                _otherHostData = true; // values the graph reads that only a walk would write
                break;
        }
    }

    /// <summary>
    /// A copy of <paramref name="bytes"/> from the device at <paramref name="source"/> to page-locked host memory at
    /// <paramref name="destination"/> (the token selection ending a step); whether to queue it (not while checking).
    /// </summary>
    public bool ObserveReadBack(ulong destination, ulong source, long bytes)
    {
        if (Mode == StepMode.Direct) return true;
        Span<ulong> words = [3, destination, source, (ulong)bytes];
        Observe(words);
        return Mode != StepMode.Checking;
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
        bool repeatable = !_otherHostData && _positionSource != 0 && _tokenSource != 0;
        _recordings.Add(new StepRecording(_words.AsSpan(0, _count).ToArray(), exec, repeatable, _positionSource, _tokenSource, _tokenBytes));
    }

    /// <summary>Ends a check: the recording the step repeated, or null when it repeated none.</summary>
    public StepRecording? EndChecking()
    {
        Mode = StepMode.Direct;
        for (int i = 0; i < _recordings.Count; i++)
            if ((_alive & (1 << i)) != 0 && _recordings[i].Words.Length == _count) return _recordings[i];
        var why = new System.Text.StringBuilder(Poisoned ? $"poisoned: {PoisonedBy}" : $"{_count} words");
        for (int i = 0; i < _recordings.Count && !Poisoned; i++)
        {
            ulong[] recorded = _recordings[i].Words;
            why.Append($"; recording {i} ({recorded.Length} words) ");
            if (_divergedAt[i] < 0) why.Append("is longer");
            else why.Append($"differs at word {_divergedAt[i]}: {(_divergedAt[i] < recorded.Length ? recorded[_divergedAt[i]] : 0):X} then, {_divergedWord[i]:X} now");
        }
        Missed(why.ToString());
        return null;
    }

    /// <summary>
    /// Records that a check matched <paramref name="recording"/> for a pass of <paramref name="key"/> in
    /// <paramref name="state"/>, which held from the check's start to its end; no other recording stays verified for the key.
    /// </summary>
    public void Verify(StepRecording recording, in ForwardKey key, in StepState state)
    {
        if (!recording.Repeatable || !key.IsKnown) return;
        foreach (StepRecording other in _recordings)
            if (other.VerifiedKey == key) other.VerifiedKey = default;
        recording.VerifiedKey = key;
        recording.VerifiedState = state;
    }

    /// <summary>The recording verified for a pass of <paramref name="key"/> in <paramref name="state"/>, or null.</summary>
    public StepRecording? FindVerified(in ForwardKey key, in StepState state)
    {
        if (!key.IsKnown) return null;
        foreach (StepRecording recording in _recordings)
            if (recording.VerifiedKey == key && recording.VerifiedState == state) return recording;
        return null;
    }

    /// <summary>Leaves recording or checking without keeping anything (the pass failed).</summary>
    public void Abandon() => Mode = StepMode.Direct;

    public void Dispose()
    {
        foreach (StepRecording recording in _recordings) context.Driver.DestroyGraphExec(recording.Exec);
        _recordings.Clear();
    }
}

/// <summary>
/// A recorded decode step: its words and instantiated graph; whether it may run without a check (<see cref="Repeatable"/>:
/// the only host data its copies read are the step's position and token ids, at <see cref="PositionSource"/> and
/// <see cref="TokenSource"/>); and the key and state a check verified it for, if any.
/// </summary>
internal sealed class StepRecording(ulong[] words, IntPtr exec, bool repeatable, ulong positionSource, ulong tokenSource, long tokenBytes)
{
    public ulong[] Words { get; } = words;
    public IntPtr Exec { get; } = exec;
    public bool Repeatable { get; } = repeatable;
    public ulong PositionSource { get; } = positionSource;
    public ulong TokenSource { get; } = tokenSource;
    public long TokenBytes { get; } = tokenBytes;
    public ForwardKey VerifiedKey { get; set; }
    public StepState VerifiedState { get; set; }
}

/// <summary>
/// What of the backend's own state decides a decode step's words besides the pass: device allocations made or freed
/// (every address a launch names), buffers attached and pinned host data moved, the launch-choosing settings, and the
/// weight placement. Equal states around a pass of the same <see cref="ForwardKey"/> mean the same launches.
/// </summary>
internal readonly record struct StepState(long Allocations, long Changes, long Settings, object? Placement);

/// <summary>What a recorded copy of host data carries.</summary>
internal enum StepInput
{
    /// <summary>Values of the walk's own (row ids, scales).</summary>
    Other,
    /// <summary>The step's first position.</summary>
    Position,
    /// <summary>The step's token ids.</summary>
    Tokens,
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
