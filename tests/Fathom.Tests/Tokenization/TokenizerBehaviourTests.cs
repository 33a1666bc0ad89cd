using System.Text;
using Fathom.Tokenization;

namespace Fathom.Tests.Tokenization;

/// <summary>Decoding, streaming, special-token parsing, BOS handling and model import on the real tokenizers.</summary>
public class TokenizerBehaviourTests
{
    public static TheoryData<string> Names => new() { TokenizerTestData.DeepSeekV3, TokenizerTestData.Qwen };

    private static IEnumerable<ReferenceCase> PlainCases => TokenizerTestData.Cases.Where(c => !c.AddSpecial);

    [Theory]
    [MemberData(nameof(Names))]
    public void DecodeOfEncodeGivesTheTextBack(string name)
    {
        var tokenizer = TokenizerTestData.Get(name);
        var failures = new List<string>();
        foreach (var c in PlainCases)
        {
            // Qwen normalizes to NFC, so its round trip gives the NFC form.
            string expected = tokenizer.Model.NormalizeNfc ? Nfc.Normalize(c.Text) : c.Text;
            string decoded = tokenizer.Decode(c.Expected(name));
            if (decoded != expected) failures.Add(TokenizerTestData.Escape(c.Text));
        }
        Assert.True(failures.Count == 0, $"{failures.Count} strings do not round-trip:\n" + string.Join("\n", failures.Take(20)));
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void StreamingDecoderOutputEqualsDecodeAndNeverSplitsACharacter(string name)
    {
        var tokenizer = TokenizerTestData.Get(name);
        // Every string as is; the strings with BOS also with special tokens skipped.
        foreach (var c in TokenizerTestData.Cases)
        {
            foreach (bool skipSpecial in c.AddSpecial ? new[] { true } : new[] { false })
            {
                int[] ids = c.Expected(name);
                var stream = new StreamingDecoder(tokenizer, skipSpecial);
                var text = new StringBuilder();
                foreach (int id in ids)
                {
                    string piece = stream.Append(id);
                    AssertWellFormed(piece, c.Text);
                    text.Append(piece);
                }
                string tail = stream.Flush();
                AssertWellFormed(tail, c.Text);
                text.Append(tail);
                Assert.Equal(tokenizer.Decode(ids, skipSpecial), text.ToString());
            }
        }
    }

    private static void AssertWellFormed(string piece, string source)
    {
        for (int i = 0; i < piece.Length; i++)
        {
            if (char.IsHighSurrogate(piece[i]) && i + 1 < piece.Length && char.IsLowSurrogate(piece[i + 1])) { i++; continue; }
            Assert.False(char.IsSurrogate(piece[i]), $"lone surrogate in streamed output for \"{TokenizerTestData.Escape(source)}\"");
        }
    }

    [Fact]
    public void StreamingDecoderHoldsBackIncompleteCharactersAndReplacesDeadOnes()
    {
        var tokenizer = TokenizerTestData.Get(TokenizerTestData.Qwen);
        // Byte tokens for 0xE4 0xB8 0xAD ("中") fed one by one: nothing until the character completes.
        int[] bytes = new byte[] { 0xE4, 0xB8, 0xAD }.Select(b => tokenizer.TryGetId(ByteLevelAlphabet.ToChar((byte)b).ToString())!.Value).ToArray();
        var stream = new StreamingDecoder(tokenizer);
        Assert.Equal("", stream.Append(bytes[0]));
        Assert.Equal("", stream.Append(bytes[1]));
        Assert.Equal("中", stream.Append(bytes[2]));
        // A lead byte followed by an ASCII token: the lead byte can no longer complete.
        Assert.Equal("", stream.Append(bytes[0]));
        Assert.Equal("\uFFFDa", stream.Append(tokenizer.TryGetId("a")!.Value));
        // Pending bytes at the end of the stream become U+FFFD on Flush.
        Assert.Equal("", stream.Append(bytes[0]));
        Assert.Equal("\uFFFD", stream.Flush());
    }

    [Fact]
    public void ParseSpecialControlsControlTokensOnly()
    {
        var deepSeek = TokenizerTestData.Get(TokenizerTestData.DeepSeekV3);
        const string chat = "<｜User｜>Hi<｜Assistant｜>";
        int user = deepSeek.TryGetId("<｜User｜>")!.Value;
        Assert.Equal(TokenType.Control, deepSeek.GetTokenType(user));
        Assert.Contains(user, deepSeek.Encode(chat, addSpecial: false, parseSpecial: true));
        var asText = deepSeek.Encode(chat, addSpecial: false, parseSpecial: false);
        Assert.DoesNotContain(user, asText);
        Assert.All(asText, id => Assert.Equal(TokenType.Normal, deepSeek.GetTokenType(id)));
        Assert.Equal(chat, deepSeek.Decode(asText.ToArray()));

        var qwen = TokenizerTestData.Get(TokenizerTestData.Qwen);
        int imStart = qwen.TryGetId("<|im_start|>")!.Value;
        int think = qwen.TryGetId("<think>")!.Value;
        Assert.Equal(TokenType.Control, qwen.GetTokenType(imStart));
        Assert.Equal(TokenType.UserDefined, qwen.GetTokenType(think));
        var parsed = qwen.Encode("<|im_start|><think>x", addSpecial: false, parseSpecial: true);
        Assert.Equal(imStart, parsed[0]);
        Assert.Equal(think, parsed[1]);
        // Without special parsing, control tokens are text; user-defined tokens are still matched (llama.cpp, HF).
        var unparsed = qwen.Encode("<|im_start|><think>x", addSpecial: false, parseSpecial: false);
        Assert.DoesNotContain(imStart, unparsed);
        Assert.Contains(think, unparsed);
        Assert.Equal("<|im_start|><think>x", qwen.Decode(unparsed.ToArray()));
    }

    [Fact]
    public void DeepSeekAddsBosAndQwenDoesNot()
    {
        var deepSeek = TokenizerTestData.Get(TokenizerTestData.DeepSeekV3);
        Assert.Equal(0, deepSeek.BosId);
        Assert.Equal(0, deepSeek.Encode("Hello")[0]);
        Assert.NotEqual(0, deepSeek.Encode("Hello", addSpecial: false)[0]);
        Assert.Equal("Hello", deepSeek.Decode(deepSeek.Encode("Hello").ToArray(), skipSpecial: true));

        var qwen = TokenizerTestData.Get(TokenizerTestData.Qwen);
        Assert.Null(qwen.BosId);
        Assert.Equal(qwen.Encode("Hello", addSpecial: false), qwen.Encode("Hello", addSpecial: true));
    }

    [Fact]
    public void EndOfGenerationTokens()
    {
        var deepSeek = TokenizerTestData.Get(TokenizerTestData.DeepSeekV3);
        Assert.Equal(1, deepSeek.EosId);
        Assert.True(deepSeek.IsEndOfGeneration(1));
        Assert.False(deepSeek.IsEndOfGeneration(0));

        var qwen = TokenizerTestData.Get(TokenizerTestData.Qwen);
        int imEnd = qwen.TryGetId("<|im_end|>")!.Value;
        Assert.Equal(imEnd, qwen.EosId);
        Assert.Equal(imEnd, qwen.EotId);
        Assert.True(qwen.IsEndOfGeneration(imEnd));
        Assert.True(qwen.IsEndOfGeneration(qwen.TryGetId("<|endoftext|>")!.Value));
        Assert.False(qwen.IsEndOfGeneration(qwen.TryGetId("<|im_start|>")!.Value));
    }

    [Fact]
    public void HuggingFaceImportFollowsConvertHfToGguf()
    {
        var deepSeek = TokenizerTestData.Get(TokenizerTestData.DeepSeekV3).Model;
        Assert.Equal("deepseek-v3", deepSeek.Pre);
        Assert.True(deepSeek.AddBos);
        Assert.False(deepSeek.NormalizeNfc);
        Assert.Equal(128815, deepSeek.Tokens.Length);
        Assert.Equal(127741, deepSeek.Merges.Length); // "a b" string format
        Assert.Equal(TokenType.Control, deepSeek.Types[0]);
        Assert.Equal(TokenType.Normal, deepSeek.Types[1000]);
        Assert.Equal(TokenType.Control, deepSeek.Types[Array.IndexOf(deepSeek.Tokens, "<｜tool▁sep｜>")]); // non-special but looks special

        var qwen = TokenizerTestData.Get(TokenizerTestData.Qwen).Model;
        Assert.Equal("qwen2", qwen.Pre);
        Assert.False(qwen.AddBos);
        Assert.True(qwen.NormalizeNfc);
        Assert.Equal(151387, qwen.Merges.Length); // [a, b] pair format
        Assert.Equal("Ġ Ġ", qwen.Merges[0]);
        Assert.Equal(TokenType.UserDefined, qwen.Types[Array.IndexOf(qwen.Tokens, "<tool_call>")]);
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void TokenPiecesAndIdsAgree(string name)
    {
        var tokenizer = TokenizerTestData.Get(name);
        for (int id = 0; id < tokenizer.VocabSize; id += 97)
        {
            byte[] bytes = tokenizer.TokenBytes(id);
            Assert.Equal(bytes, tokenizer.TokenBytes(id));
            Assert.Equal(id, tokenizer.TryGetId(tokenizer.Model.Tokens[id]));
            Assert.Equal(Encoding.UTF8.GetString(bytes), tokenizer.TokenToPiece(id));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.TokenBytes(tokenizer.VocabSize));
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([-1]));
        Assert.Null(tokenizer.TryGetId("no such token \u0001"));
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void ConcurrentEncodesAgree(string name)
    {
        var tokenizer = Tokenizer.Create(TokenizerTestData.Get(name).Model); // fresh cache
        var cases = PlainCases.Take(1500).ToArray();
        var results = new int[cases.Length][];
        Parallel.For(0, cases.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 },
            i => results[i] = tokenizer.Encode(cases[i].Text, addSpecial: false).ToArray());
        for (int i = 0; i < cases.Length; i++) Assert.Equal(cases[i].Expected(name), results[i]);
    }

    [Fact]
    public void InvalidModelsAreRejected()
    {
        var good = TokenizerTestData.Get(TokenizerTestData.Qwen).Model;
        Assert.Throws<NotSupportedException>(() => Tokenizer.Create(good with { Model = "llama" }));
        Assert.Throws<NotSupportedException>(() => Tokenizer.Create(good with { Pre = "nonexistent" }));
        Assert.Throws<InvalidDataException>(() => Tokenizer.Create(good with { Types = good.Types[..^1] }));
        Assert.Throws<InvalidDataException>(() => Tokenizer.Create(good with { EosId = good.Tokens.Length }));
        Assert.Throws<InvalidDataException>(() => Tokenizer.Create(good with { Merges = ["nospace"] }));
    }
}
