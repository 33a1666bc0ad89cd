namespace Fathom.Generation;

/// <summary>Which part of a reasoning model's output a piece of text belongs to.</summary>
public enum OutputChannel
{
    Reasoning,
    Answer,
}

/// <summary>
/// Splits a reasoning model's streamed output into the reasoning (<c>&lt;think&gt;…&lt;/think&gt;</c>) and the answer,
/// as DeepSeek's API does with <c>reasoning_content</c> and <c>content</c>. Works when the chat template already
/// opened <c>&lt;think&gt;</c> (start in reasoning), when the model opens it itself, and when a tag is split across
/// tokens. Newlines right after the tags and whitespace right before <c>&lt;/think&gt;</c> are not part of either text.
/// </summary>
public sealed class ReasoningSplitter
{
    public const string OpenTag = "<think>";
    public const string CloseTag = "</think>";

    private enum State { Start, ReasoningStart, Reasoning, AnswerStart, Answer }

    private State _state;
    private string _pending = "";
    private readonly List<(OutputChannel Channel, string Text)> _output = [];

    /// <param name="startsInReasoning">True when the prompt already ends with <c>&lt;think&gt;</c> (R1's newer templates).</param>
    public ReasoningSplitter(bool startsInReasoning)
    {
        _state = startsInReasoning ? State.ReasoningStart : State.Start;
        SawReasoning = startsInReasoning;
    }

    /// <summary>True once any reasoning section was opened.</summary>
    public bool SawReasoning { get; private set; }

    /// <summary>True once the reasoning section was closed (the answer has begun).</summary>
    public bool ReasoningClosed => _state is State.AnswerStart or State.Answer && SawReasoning;

    /// <summary>Adds decoded text; returns the pieces it completes, each tagged with its channel.</summary>
    public IReadOnlyList<(OutputChannel Channel, string Text)> Append(string text)
    {
        _output.Clear();
        _pending += text;
        while (Step()) { }
        return _output.Count == 0 ? [] : [.. _output];
    }

    /// <summary>Releases whatever is held back at the end of generation.</summary>
    public IReadOnlyList<(OutputChannel Channel, string Text)> Flush()
    {
        _output.Clear();
        string rest = _pending;
        _pending = "";
        if (rest.Length > 0)
        {
            // An unfinished reasoning section keeps its text as reasoning; held-back whitespace and partial tags are text.
            bool inReasoning = _state is State.Reasoning or State.ReasoningStart;
            Emit(inReasoning ? OutputChannel.Reasoning : OutputChannel.Answer, inReasoning ? rest.TrimEnd() : rest);
        }
        return _output.Count == 0 ? [] : [.. _output];
    }

    /// <summary>Consumes as much of the pending text as can be decided; false when it needs more input.</summary>
    private bool Step()
    {
        switch (_state)
        {
            case State.Start:
            {
                // Only a <think> at the very start (after whitespace) opens reasoning.
                string trimmed = _pending.TrimStart();
                if (trimmed.Length == 0) return false;
                if (trimmed.StartsWith(OpenTag, StringComparison.Ordinal))
                {
                    _pending = trimmed[OpenTag.Length..];
                    _state = State.ReasoningStart;
                    SawReasoning = true;
                    return true;
                }
                if (OpenTag.StartsWith(trimmed, StringComparison.Ordinal)) return false; // maybe "<thi"
                _state = State.Answer;
                return true;
            }
            case State.ReasoningStart:
            {
                string trimmed = _pending.TrimStart('\n', '\r');
                if (trimmed.Length == 0) { _pending = ""; return false; }
                _pending = trimmed;
                _state = State.Reasoning;
                return true;
            }
            case State.Reasoning:
            {
                int close = _pending.IndexOf(CloseTag, StringComparison.Ordinal);
                if (close >= 0)
                {
                    Emit(OutputChannel.Reasoning, _pending[..close].TrimEnd());
                    _pending = _pending[(close + CloseTag.Length)..];
                    _state = State.AnswerStart;
                    return true;
                }
                // Hold back a possible partial "</think>" and trailing whitespace (dropped if the tag follows).
                int keep = PartialSuffix(_pending, CloseTag);
                int end = _pending.Length - keep;
                while (end > 0 && char.IsWhiteSpace(_pending[end - 1])) end--;
                Emit(OutputChannel.Reasoning, _pending[..end]);
                _pending = _pending[end..];
                return false;
            }
            case State.AnswerStart:
            {
                string trimmed = _pending.TrimStart('\n', '\r', ' ');
                if (trimmed.Length == 0) { _pending = ""; return false; }
                _pending = trimmed;
                _state = State.Answer;
                return true;
            }
            default:
                Emit(OutputChannel.Answer, _pending);
                _pending = "";
                return false;
        }
    }

    private void Emit(OutputChannel channel, string text)
    {
        if (text.Length > 0) _output.Add((channel, text));
    }

    /// <summary>Length of the longest suffix of <paramref name="text"/> that is a proper prefix of <paramref name="tag"/>:
    /// text that may still become <paramref name="tag"/> when the next piece arrives.</summary>
    internal static int PartialSuffix(string text, string tag)
    {
        for (int len = Math.Min(tag.Length - 1, text.Length); len > 0; len--)
            if (text.AsSpan(text.Length - len).SequenceEqual(tag.AsSpan(0, len))) return len;
        return 0;
    }
}
