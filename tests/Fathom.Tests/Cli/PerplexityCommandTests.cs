using System.Text.Json.Nodes;
using Fathom.Cli;
using Fathom.Evaluation;
using Fathom.Generation;
using Fathom.Tests.Models;

namespace Fathom.Tests.Cli;

public sealed class PerplexityCommandTests : IDisposable
{
    private const string Words = "the quick brown fox jumps over the lazy dog while a small cat watches from the warm window and thinks about dinner ";
    private readonly string _model = ModelTestKit.Synthesize(LlamaCppAgreementTests.Spec("qwen2"));
    private readonly string _text = Path.GetTempFileName();
    private readonly string _shortText = Path.GetTempFileName();
    private readonly string _otherText = Path.GetTempFileName();
    private readonly string _saved = Path.GetTempFileName();

    public PerplexityCommandTests()
    {
        File.WriteAllText(_text, string.Concat(Enumerable.Repeat(Words, 4)));
        File.WriteAllText(_shortText, "the cat");
        File.WriteAllText(_otherText, string.Concat(Enumerable.Repeat(Words.ToUpperInvariant(), 4)));
    }

    public void Dispose()
    {
        foreach (string path in new[] { _model, _text, _shortText, _otherText, _saved }) File.Delete(path);
    }

    private static (int Code, string Output, string Error) Invoke(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = FathomCommandLine.Invoke(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public void JsonReportsTheLibrarysPerplexityAndKlAgainstItsOwnRunIsZero()
    {
        var (code, output, error) = Invoke("perplexity", "-m", _model, "-f", _text, "-c", "16", "-t", "2", "--json", "--save-logits", _saved);
        Assert.True(code == 0, error);
        JsonObject json = JsonNode.Parse(output)!.AsObject();

        using LoadedModel model = LoadedModel.Open(_model);
        PerplexityResult expected = Perplexity.Evaluate(model, File.ReadAllText(_text), new PerplexityOptions { ContextSize = 16 });
        Assert.Equal(expected.Perplexity, (double)json["perplexity"]!, 9);
        Assert.Equal(expected.ChunkCount, (int)json["chunks"]!);
        Assert.True(expected.ChunkCount >= 2);
        Assert.Null(json["klDivergence"]);

        (code, output, error) = Invoke("perplexity", "-m", _model, "-f", _text, "-c", "16", "-t", "2", "--kl-divergence-base", _saved);
        Assert.True(code == 0, error);
        Assert.Contains("[1]", output);
        Assert.Contains("Final estimate: PPL = ", output);
        Assert.Contains("Same top p:    100.000", output);
        Assert.Contains("tokens scored", error);
    }

    [Fact]
    public void ChunksLimitsTheRun()
    {
        var (code, output, error) = Invoke("perplexity", "-m", _model, "-f", _text, "-c", "16", "--chunks", "1", "--json");
        Assert.True(code == 0, error);
        Assert.Equal(1, (int)JsonNode.Parse(output)!["chunks"]!);
    }

    [Theory]
    [InlineData("perplexity", "-m", "/nonexistent/model.gguf", "-f", "TEXT")]
    [InlineData("perplexity", "-m", "MODEL", "-f", "/nonexistent/text.txt")]
    [InlineData("perplexity", "-m", "MODEL", "-f", "SHORT", "-c", "16")]
    [InlineData("perplexity", "-m", "MODEL", "-f", "TEXT", "-c", "2")]
    [InlineData("perplexity", "-m", "MODEL", "-f", "TEXT", "-c", "16", "--kl-divergence-base", "/nonexistent/base.bin")]
    [InlineData("perplexity", "-m", "MODEL", "-f", "TEXT", "-c", "16", "--kl-divergence-base", "MODEL")]
    [InlineData("perplexity", "-m", "MODEL", "-f", "TEXT", "-c", "16", "--chunks", "0")]
    public void BadInputGetsAOneLineError(params string[] args)
    {
        var (code, _, error) = Invoke([.. args.Select(a => a switch { "MODEL" => _model, "TEXT" => _text, "SHORT" => _shortText, _ => a })]);
        Assert.NotEqual(0, code);
        Assert.StartsWith("error:", error.Trim());
        Assert.Single(error.Trim().Split('\n'));
    }

    [Fact]
    public void ABaseOfAnotherTextIsRefused()
    {
        var (code, _, error) = Invoke("perplexity", "-m", _model, "-f", _otherText, "-c", "16", "--save-logits", _saved, "--json");
        Assert.True(code == 0, error);
        (code, _, error) = Invoke("perplexity", "-m", _model, "-f", _text, "-c", "16", "--kl-divergence-base", _saved);
        Assert.Equal(2, code);
        Assert.Contains("different tokens", error);
    }
}
