using Fathom.Generation;

namespace Fathom.Cli.Commands;

/// <summary>Writes streamed output to a terminal: reasoning dimmed (or hidden), the answer plain.</summary>
public sealed class StreamingConsole(TextWriter output, bool showReasoning)
{
    private const string Dim = "\u001b[2m", Reset = "\u001b[0m";
    private OutputChannel? _current;
    private readonly bool _ansi = output == Console.Out && !Console.IsOutputRedirected;

    public bool ShowReasoning { get; set; } = showReasoning;

    public void Write(GenerationChunk chunk)
    {
        if (chunk.Channel == OutputChannel.Reasoning && !ShowReasoning) return;
        if (chunk.Channel != _current)
        {
            if (_current == OutputChannel.Reasoning) output.Write(_ansi ? Reset + "\n\n" : "\n</think>\n\n");
            if (chunk.Channel == OutputChannel.Reasoning) output.Write(_ansi ? Dim : "<think>\n");
            _current = chunk.Channel;
        }
        output.Write(chunk.Text);
        output.Flush();
    }

    public void End()
    {
        if (_current == OutputChannel.Reasoning) output.Write(_ansi ? Reset : "\n</think>");
        output.WriteLine();
        _current = null;
    }
}
