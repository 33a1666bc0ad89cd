using System.Runtime.CompilerServices;

namespace Fathom.Tokenization;

/// <summary>
/// Splits text into the pieces that BPE then encodes separately. A pre-tokenizer is a sequence of stages;
/// each stage is one regex of Hugging Face's <c>Split(behavior: Isolated)</c> (llama.cpp's <c>regex_exprs</c>):
/// every match and every gap between matches becomes a piece, and the next stage splits each piece again.
/// Stages are hand-written scanners over code points that follow the regex's backtracking semantics exactly
/// (.NET's Regex works on UTF-16 code units, so <c>\p{L}</c> never matches a supplementary-plane letter).
/// </summary>
internal abstract class PreTokenizer
{
    protected const CodePointClass L = CodePointClass.Letter;
    protected const CodePointClass N = CodePointClass.Number;
    protected const CodePointClass M = CodePointClass.Mark;
    protected const CodePointClass P = CodePointClass.Punctuation;
    protected const CodePointClass S = CodePointClass.Symbol;
    protected const CodePointClass WS = CodePointClass.Whitespace;
    protected const CodePointClass LineBreak = CodePointClass.LineBreak;

    /// <summary>The pre-tokenizer for a llama.cpp <c>tokenizer.ggml.pre</c> name.</summary>
    public static PreTokenizer ForPreType(string pre) => pre switch
    {
        "deepseek-v3" => new DeepSeekV3PreTokenizer(),
        "deepseek-llm" => new DeepSeekLlmPreTokenizer(),
        "qwen2" or "deepseek-r1-qwen" => new Qwen2PreTokenizer(maxDigits: 1),
        "llama-bpe" or "llama3" => new Qwen2PreTokenizer(maxDigits: 3),
        _ => throw new NotSupportedException($"Unsupported BPE pre-tokenizer '{pre}' (supported: deepseek-v3, deepseek-llm, qwen2, deepseek-r1-qwen, llama-bpe)."),
    };

    /// <summary>Number of regex stages applied one after another.</summary>
    protected abstract int StageCount { get; }

    /// <summary>
    /// Length in chars of the match of stage <paramref name="stage"/> at <paramref name="pos"/>, or 0 when the
    /// regex does not match there. The regex sees only <c>text[..end]</c> of the current piece.
    /// </summary>
    protected abstract int MatchAt(int stage, ReadOnlySpan<char> text, int pos, int end);

    /// <summary>Appends the pieces of <paramref name="text"/> as (start, length) pairs, in order.</summary>
    public void Split(ReadOnlySpan<char> text, List<(int Start, int Length)> pieces)
    {
        if (text.Length > 0) SplitStage(0, text, 0, text.Length, pieces);
    }

    private void SplitStage(int stage, ReadOnlySpan<char> text, int start, int end, List<(int Start, int Length)> pieces)
    {
        if (stage == StageCount)
        {
            pieces.Add((start, end - start));
            return;
        }
        int gapStart = start;
        int pos = start;
        while (pos < end)
        {
            int length = MatchAt(stage, text, pos, end);
            if (length == 0)
            {
                CodePoints.At(text, pos, end, out int charCount);
                pos += charCount;
                continue;
            }
            if (gapStart < pos) SplitStage(stage + 1, text, gapStart, pos, pieces);
            SplitStage(stage + 1, text, pos, pos + length, pieces);
            pos += length;
            gapStart = pos;
        }
        if (gapStart < end) SplitStage(stage + 1, text, gapStart, end, pieces);
    }

    // ---- building blocks shared by the scanners ----

    /// <summary>Length in chars of the run of code points having any class in <paramref name="any"/>, at most <paramref name="maxCodePoints"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected static int RunOfAny(ReadOnlySpan<char> text, int pos, int end, CodePointClass any, int maxCodePoints = int.MaxValue)
    {
        int p = pos;
        for (int n = 0; p < end && n < maxCodePoints; n++)
        {
            int c = CodePoints.At(text, p, end, out int len);
            if ((CodePoints.Classify(c) & any) == 0) break;
            p += len;
        }
        return p - pos;
    }

    /// <summary>Length in chars of the run of code points having no class in <paramref name="none"/>.</summary>
    protected static int RunOfNone(ReadOnlySpan<char> text, int pos, int end, CodePointClass none)
    {
        int p = pos;
        while (p < end)
        {
            int c = CodePoints.At(text, p, end, out int len);
            if ((CodePoints.Classify(c) & none) != 0) break;
            p += len;
        }
        return p - pos;
    }

    protected static int RunOfLineBreaks(ReadOnlySpan<char> text, int pos, int end)
    {
        int p = pos;
        while (p < end && (text[p] == '\r' || text[p] == '\n')) p++;
        return p - pos;
    }

    /// <summary>
    /// The whitespace tail shared by the GPT-4-style patterns, at a whitespace char:
    /// <c>\s*[\r\n]+|\s+(?!\S)|\s+</c>.
    /// </summary>
    protected static int MatchWhitespace(ReadOnlySpan<char> text, int pos, int end)
    {
        // White_Space code points are all in the BMP, so the run is counted in chars.
        int j = pos;
        int lastLineBreak = -1;
        while (j < end && CodePoints.IsWhitespace(text[j]))
        {
            if (text[j] == '\r' || text[j] == '\n') lastLineBreak = j;
            j++;
        }
        // \s*[\r\n]+ : greedy \s* backs off to the last line break of the run.
        if (lastLineBreak >= 0) return lastLineBreak + 1 - pos;
        // \s+(?!\S) : the whole run at the end of the piece, else the run minus its last char.
        if (j == end) return j - pos;
        if (j - 1 > pos) return j - 1 - pos;
        // \s+
        return j - pos;
    }
}
