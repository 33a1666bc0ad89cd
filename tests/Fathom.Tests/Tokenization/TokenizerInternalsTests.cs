using System.Text;
using System.Text.RegularExpressions;
using Fathom.Tokenization;

namespace Fathom.Tests.Tokenization;

/// <summary>
/// The hand-written pre-tokenizer scanners against .NET's regex engine running llama.cpp's regexes (on text
/// without supplementary-plane characters, which .NET regex cannot classify), and the heap BPE against the
/// plain one.
/// </summary>
public class TokenizerInternalsTests
{
    private const string Gpt4Tail = @"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string Contractions = @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|";

    // llama.cpp llama-vocab.cpp regex_exprs ($ written as \z: .NET's $ also matches before a final \n).
    public static TheoryData<string, string[]> PreTokenizers => new()
    {
        { "qwen2", [Contractions + @"\p{N}" + Gpt4Tail] },
        { "llama-bpe", [Contractions + @"\p{N}{1,3}" + Gpt4Tail] },
        { "deepseek-v3", [@"\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
            @"[!""#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"] },
        { "deepseek-llm", ["[\r\n]",
            @"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1F7Dᾀ-ᾴᾶ-ᾼ\u1FBEῂ-ῄῆ-ῌῐ-\u1FD3ῖ-\u1FDBῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212A-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ]+",
            @"\s?[!-/:-~！-／：-～‘-‟　-。]+", @"\s+\z", "[一-龥ࠀ-一가-퟿]+", @"\p{N}+"] },
    };

    [Theory]
    [MemberData(nameof(PreTokenizers))]
    public void ScannersSplitLikeTheRegexes(string pre, string[] patterns)
    {
        var regexes = patterns.Select(p => new Regex(p, RegexOptions.CultureInvariant)).ToArray();
        var scanner = PreTokenizer.ForPreType(pre);
        var texts = TokenizerTestData.Cases.Select(c => c.Text).Where(t => !t.Any(char.IsSurrogate)).Distinct().ToArray();
        Assert.True(texts.Length > 3000);
        var pieces = new List<(int Start, int Length)>();
        foreach (string text in texts)
        {
            var expected = new List<string> { text };
            foreach (var regex in regexes) expected = expected.SelectMany(piece => SplitIsolated(regex, piece)).ToList();
            pieces.Clear();
            scanner.Split(text, pieces);
            var actual = pieces.Select(p => text.Substring(p.Start, p.Length)).ToList();
            Assert.True(expected.SequenceEqual(actual),
                $"{pre} \"{TokenizerTestData.Escape(text)}\":\nexpected {string.Join(" | ", expected.Select(TokenizerTestData.Escape))}\nactual   {string.Join(" | ", actual.Select(TokenizerTestData.Escape))}");
        }
    }

    // Hugging Face Split with behavior Isolated: matches and the gaps between them are pieces.
    private static IEnumerable<string> SplitIsolated(Regex regex, string text)
    {
        int previous = 0;
        for (var m = regex.Match(text); m.Success; m = m.NextMatch())
        {
            if (m.Length == 0) continue;
            if (m.Index > previous) yield return text[previous..m.Index];
            yield return m.Value;
            previous = m.Index + m.Length;
        }
        if (previous < text.Length) yield return text[previous..];
    }

    [Fact]
    public void SupplementaryLettersAreLetters()
    {
        // .NET regex sees surrogates here; the scanners see one letter (U+1D400..) per code point, as HF does.
        var pieces = new List<(int Start, int Length)>();
        const string text = "a𝐀b 𝐁𝐨𝐥𝐝!";
        PreTokenizer.ForPreType("qwen2").Split(text, pieces);
        Assert.Equal(["a𝐀b", " 𝐁𝐨𝐥𝐝", "!"], pieces.Select(p => text.Substring(p.Start, p.Length)));
    }

    [Theory]
    [InlineData(TokenizerTestData.DeepSeekV3)]
    [InlineData(TokenizerTestData.Qwen)]
    public void HeapBpeMatchesPlainBpe(string name)
    {
        var merger = TokenizerTestData.Get(name).Merger;
        // Whole corpus strings as single pieces (the quadratic reference limits their size), plus long runs.
        var texts = TokenizerTestData.Cases.Select(c => c.Text).Where(t => t.Length <= 400).Distinct()
            .Concat([new string('a', 3000), string.Concat(Enumerable.Repeat("ab ", 700)), new string(' ', 1000), string.Concat(Enumerable.Repeat("中文", 400))]);
        var plain = new List<int>();
        var heap = new List<int>();
        foreach (string text in texts)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(text);
            plain.Clear();
            heap.Clear();
            merger.EncodeSmall(bytes, plain);
            merger.EncodeLarge(bytes, heap);
            Assert.True(plain.SequenceEqual(heap), $"\"{TokenizerTestData.Escape(text)}\"");
        }
    }

    [Fact]
    public void NfcComposesReordersAndKeepsNormalizedText()
    {
        // Expected forms come from the Unicode data (UnicodeData.txt decompositions and combining classes).
        Assert.Equal("\u00E9", Nfc.Normalize("e\u0301"));                    // e + acute -> é
        Assert.Equal("\u1EC7", Nfc.Normalize("e\u0302\u0323"));              // marks reordered (ccc 220 before 230), then composed
        Assert.Equal("\u0915\u093C", Nfc.Normalize("\u0958"));               // composition exclusion stays decomposed
        Assert.Equal("\u00B7", Nfc.Normalize("\u0387"));                     // singleton
        Assert.Equal("\uD55C", Nfc.Normalize("\u1112\u1161\u11AB"));         // Hangul L+V+T
        Assert.Equal("\u0301a", Nfc.Normalize("\u0301a"));                   // leading mark blocks nothing after it
        foreach (var c in TokenizerTestData.Cases.Take(3000))
        {
            string once = Nfc.Normalize(c.Text);
            Assert.Equal(once, Nfc.Normalize(once));
            if (Nfc.IsQuickNormalized(c.Text)) Assert.Equal(c.Text, once);
        }
    }
}
