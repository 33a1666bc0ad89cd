namespace Fathom.Generation;

/// <summary>
/// Finds stop strings in streamed text. Text that could still turn into a stop string is held back until the
/// next piece decides it, so a stop string never reaches the output even when a token boundary splits it.
/// </summary>
public sealed class StopMatcher
{
    private readonly string[] _stops;
    private string _pending = "";

    public StopMatcher(IEnumerable<string>? stops)
    {
        _stops = stops?.Where(s => !string.IsNullOrEmpty(s)).Distinct().ToArray() ?? [];
    }

    public bool Stopped { get; private set; }

    /// <summary>The stop string that ended the text, once <see cref="Stopped"/>.</summary>
    public string? MatchedStop { get; private set; }

    /// <summary>Adds text; returns what can be released now (everything before a stop string, once one is found).</summary>
    public string Append(string text)
    {
        if (Stopped) return "";
        if (_stops.Length == 0) return text;
        string buffer = _pending + text;

        int first = -1;
        foreach (string stop in _stops)
        {
            int at = buffer.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first)) { first = at; MatchedStop = stop; }
        }
        if (first >= 0)
        {
            Stopped = true;
            _pending = "";
            return buffer[..first];
        }

        int hold = 0;
        foreach (string stop in _stops) hold = Math.Max(hold, ReasoningSplitter.PartialSuffix(buffer, stop));
        _pending = buffer[^hold..];
        return buffer[..^hold];
    }

    /// <summary>Releases held-back text at the end of generation (it did not become a stop string).</summary>
    public string Flush()
    {
        string rest = Stopped ? "" : _pending;
        _pending = "";
        return rest;
    }
}
