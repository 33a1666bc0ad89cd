using Fathom.Gguf;
using Fathom.Tokenization;

namespace Fathom.Tests.Tokenization;

public class TokenizerGgufTests
{
    private static GgufFile RoundTrip(GgufWriter writer)
    {
        using var stream = new MemoryStream();
        writer.WriteTo(stream);
        return GgufFile.Parse(stream.ToArray(), "tokenizer.gguf");
    }

    [Theory]
    [InlineData(TokenizerTestData.DeepSeekV3)]
    [InlineData(TokenizerTestData.Qwen)]
    public void RealTokenizerSurvivesGgufAndEncodesTheSame(string name)
    {
        TokenizerModel original = TokenizerTestData.LoadModel(name);
        var writer = new GgufWriter();
        original.WriteTo(writer);
        using GgufFile file = RoundTrip(writer);

        TokenizerModel read = TokenizerModel.FromGguf(file.Metadata);
        Assert.Equal(original.Model, read.Model);
        Assert.Equal(original.Pre, read.Pre);
        Assert.Equal(original.Tokens, read.Tokens);
        Assert.Equal(original.Types, read.Types);
        Assert.Equal(original.Merges, read.Merges);
        Assert.Equal((original.BosId, original.EosId, original.EotId, original.PadId, original.AddBos, original.AddEos),
            (read.BosId, read.EosId, read.EotId, read.PadId, read.AddBos, read.AddEos));

        Tokenizer expected = TokenizerTestData.Get(name);
        Tokenizer actual = Tokenizer.Create(read);
        foreach (ReferenceCase c in TokenizerTestData.Cases.Take(300))
        {
            Assert.Equal(c.Expected(name), actual.Encode(c.Text, c.AddSpecial));
            Assert.Equal(expected.Encode(c.Text, c.AddSpecial), actual.Encode(c.Text, c.AddSpecial));
        }
    }

    [Fact]
    public void TokenTypeOutOfRangeNamesTheKey()
    {
        var writer = new GgufWriter()
            .Set(GgufKeys.Tokenizer.Model, "gpt2")
            .Set(GgufKeys.Tokenizer.Tokens, new[] { "a", "b" })
            .Set(GgufKeys.Tokenizer.TokenType, new[] { 1, 42 });
        using GgufFile file = RoundTrip(writer);
        var e = Assert.Throws<GgufFormatException>(() => TokenizerModel.FromGguf(file.Metadata));
        Assert.Equal(GgufKeys.Tokenizer.TokenType, e.Field);
    }

    [Fact]
    public void SpecialIdOutsideVocabularyNamesTheKey()
    {
        var writer = new GgufWriter()
            .Set(GgufKeys.Tokenizer.Model, "gpt2")
            .Set(GgufKeys.Tokenizer.Tokens, new[] { "a", "b" })
            .Set(GgufKeys.Tokenizer.EosTokenId, 7u);
        using GgufFile file = RoundTrip(writer);
        var e = Assert.Throws<GgufFormatException>(() => TokenizerModel.FromGguf(file.Metadata));
        Assert.Equal(GgufKeys.Tokenizer.EosTokenId, e.Field);
    }

    [Fact]
    public void MissingTokensIsAFormatError()
    {
        using GgufFile file = RoundTrip(new GgufWriter().Set(GgufKeys.Tokenizer.Model, "gpt2"));
        Assert.Throws<GgufFormatException>(() => TokenizerModel.FromGguf(file.Metadata));
    }
}
