using Fathom.Generation;

namespace Fathom.Tests.Generation;

public class StreamSplittingTests
{
    /// <summary>Feeds text in every possible two-piece split and in single characters; the result must not depend on it.</summary>
    private static IEnumerable<string[]> Chunkings(string text)
    {
        yield return [text];
        yield return [.. text.Select(c => c.ToString())];
        for (int i = 1; i < text.Length; i++) yield return [text[..i], text[i..]];
    }

    private static (string Reasoning, string Answer) Split(IEnumerable<string> pieces, bool startsInReasoning)
    {
        var splitter = new ReasoningSplitter(startsInReasoning);
        string reasoning = "", answer = "";
        void Take(IReadOnlyList<(OutputChannel Channel, string Text)> output)
        {
            foreach (var (channel, text) in output)
                if (channel == OutputChannel.Reasoning) reasoning += text; else answer += text;
        }
        foreach (string piece in pieces) Take(splitter.Append(piece));
        Take(splitter.Flush());
        return (reasoning, answer);
    }

    [Theory]
    [InlineData("<think>\nLet me add.\n2+2=4\n</think>\n\nThe answer is 4.", false, "Let me add.\n2+2=4", "The answer is 4.")]
    [InlineData("Let me add.\n</think>\n\nFour.", true, "Let me add.", "Four.")]
    [InlineData("Just an answer, no thinking.", false, "", "Just an answer, no thinking.")]
    [InlineData("  <think>x</think>y", false, "x", "y")]
    [InlineData("Still thinking when cut off  ", true, "Still thinking when cut off", "")]
    [InlineData("A <think> later is text", false, "", "A <think> later is text")]
    [InlineData("<thin", false, "", "<thin")]
    [InlineData("a < b and </thin k", true, "a < b and </thin k", "")]
    public void SplitsReasoningFromAnswerWhateverTheTokenBoundaries(string output, bool startsInReasoning, string reasoning, string answer)
    {
        foreach (string[] pieces in Chunkings(output))
            Assert.Equal((reasoning, answer), Split(pieces, startsInReasoning));
    }

    [Theory]
    [InlineData("Hello world. STOP here", new[] { "STOP" }, "Hello world. ", true)]
    [InlineData("no stop in this text", new[] { "STOP", "\n\n" }, "no stop in this text", false)]
    [InlineData("first\n\nsecond", new[] { "STOP", "\n\n" }, "first", true)]
    [InlineData("partial ST", new[] { "STOP" }, "partial ST", false)]
    [InlineData("abcabd", new[] { "abd" }, "abc", true)]
    public void StopStringsAreFoundAcrossPieces(string text, string[] stops, string expected, bool stopped)
    {
        foreach (string[] pieces in Chunkings(text))
        {
            var matcher = new StopMatcher(stops);
            string output = string.Concat(pieces.Select(matcher.Append)) + matcher.Flush();
            Assert.Equal(expected, output);
            Assert.Equal(stopped, matcher.Stopped);
        }
    }
}
