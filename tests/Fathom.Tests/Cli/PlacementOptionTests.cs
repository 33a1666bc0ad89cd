using System.CommandLine;
using Fathom.Cli;
using Fathom.Cli.Commands;
using Fathom.Models.Placement;

namespace Fathom.Tests.Cli;

/// <summary>The placement options on the command line: bad values are one-line errors (exit 2) before any model or GPU is touched.</summary>
public sealed class PlacementOptionTests
{
    private static (int Code, string Error) Invoke(params string[] args)
    {
        var error = new StringWriter();
        int code = FathomCommandLine.Invoke(args, new StringWriter(), error);
        return (code, error.ToString());
    }

    [Theory]
    [InlineData("generate", "-ot", "ffn_(up=cpu", "is not a regular expression")]
    [InlineData("generate", "--override-tensor", "exps=gpu1", "unknown device 'gpu1'; available: cpu, cuda0")]
    [InlineData("run", "-ot", "exps", "has no '='")]
    [InlineData("generate", "-ngl", "-1", "-ngl takes a layer count of 0 or more")]
    [InlineData("generate", "--n-cpu-moe", "-3", "--n-cpu-moe takes a layer count of 0 or more")]
    public void BadPlacementValuesAreClearErrors(string verb, string option, string value, string message)
    {
        string[] args = verb == "run"
            ? ["run", "-m", "/nonexistent/model.gguf", option, value]
            : ["generate", "-m", "/nonexistent/model.gguf", "--prompt-tokens", "1", option, value];
        (int code, string error) = Invoke(args);
        Assert.Equal(2, code);
        Assert.StartsWith("error: ", error);
        Assert.Contains(message, error);
    }

    [Fact]
    public void FitRefusesTheOptionsItChoosesItself()
    {
        (int code, string error) = Invoke("bench", "--like", "tiny-deepseek-r1", "--fit", "--cpu-moe", "-p", "8", "-n", "2");
        Assert.Equal(2, code);
        Assert.Contains("--fit chooses the layers and experts on the GPU itself", error);
        (code, error) = Invoke("generate", "-m", "/nonexistent/model.gguf", "--prompt-tokens", "1", "--fit", "-ngl", "10");
        Assert.Equal(2, code);
        Assert.Contains("give it without -ngl", error);
    }

    [Fact]
    public void OverrideRulesAreRepeatableAndCommaSeparated()
    {
        ParseResultFor(["generate", "-m", "m.gguf", "-p", "x", "-ot", @"blk\.0\.=cpu,exps=cpu", "-ot", "attn=cuda0"], out var placement, out var r);
        PlacementOptions options = placement.Options(r, 4096);
        Assert.Equal([@"blk\.0\.=cpu", "exps=cpu", "attn=cuda0"], options.Overrides.Select(o => o.ToString()));
        Assert.True(placement.Given(r));
        Assert.Equal(4096, options.ContextSize);
    }

    private static void ParseResultFor(string[] args, out PlacementArguments placement, out ParseResult result)
    {
        placement = new PlacementArguments();
        var command = new RootCommand();
        placement.AddTo(command);
        command.Options.Add(new Option<string>("-m"));
        command.Options.Add(new Option<string>("-p"));
        result = command.Parse(args[1..]);
        Assert.Empty(result.Errors);
    }
}
