using System.Text.Json.Nodes;
using Fathom.Cli;
using Fathom.Cli.Commands;
using Fathom.Generation;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Tests.Models;

namespace Fathom.Tests.Cli;

public sealed class GenerateCommandTests : IDisposable
{
    private readonly string _path = ModelTestKit.Synthesize(LlamaCppAgreementTests.Spec("qwen2"));

    public void Dispose() => File.Delete(_path);

    private static (int Code, string Output, string Error) Invoke(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = FathomCommandLine.Invoke(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public void JsonGreedyOutputMatchesTheModelAndLogitsAreWritten()
    {
        string logitsPath = Path.GetTempFileName();
        try
        {
            var (code, output, error) = Invoke("generate", "-m", _path, "--prompt-tokens", "5,17,200,33", "-n", "6", "--temp", "0",
                "--json", "--logits-out", logitsPath, "-t", "2");
            Assert.True(code == 0, error);
            JsonObject json = JsonNode.Parse(output)!.AsObject();
            Assert.Equal([5, 17, 200, 33], json["promptTokens"]!.AsArray().Select(n => (int)n!));

            using Model model = ModelLoader.Load(_path);
            (List<int> expected, List<float[]> logits) = ModelTestKit.Greedy(model, [5, 17, 200, 33], 10);
            int[] generated = [.. json["generatedTokens"]!.AsArray().Select(n => (int)n!)];
            Assert.Equal(expected.Skip(4).Take(generated.Length), generated);
            Assert.NotNull(json["timings"]!["generationTokensPerSecond"]);

            byte[] bytes = File.ReadAllBytes(logitsPath);
            float[] written = new float[bytes.Length / 4];
            Buffer.BlockCopy(bytes, 0, written, 0, bytes.Length);
            Assert.Equal(logits[0], written);
        }
        finally
        {
            File.Delete(logitsPath);
        }
    }

    /// <summary>--kv-b-decompressed reaches the model: a fused-attn_kv_b F16 file's logits are llama.cpp's form's, not the absorbed form's.</summary>
    [Fact]
    public void KvBDecompressedRunsLlamaCppsFormOfTheFusedLayout()
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("deepseek2-v2-lite") with { DefaultType = Fathom.Quants.GgmlType.F16 };
        string path = ModelTestKit.Synthesize(spec);
        string logitsPath = Path.GetTempFileName();
        try
        {
            var (code, _, error) = Invoke("generate", "-m", path, "--prompt-tokens", "5,17,200,33", "-n", "1", "--temp", "0",
                "--logits-out", logitsPath, "-t", "2", "--kv-b-decompressed");
            Assert.True(code == 0, error);
            byte[] bytes = File.ReadAllBytes(logitsPath);
            float[] written = new float[bytes.Length / 4];
            Buffer.BlockCopy(bytes, 0, written, 0, bytes.Length);

            float[] Logits(bool decompressed)
            {
                using Model model = ModelLoader.Load(path, new ModelOptions { Threads = 2, DecompressFusedKvB = decompressed });
                return model.Forward(model.CreateSession(8), [5, 17, 200, 33]);
            }
            Assert.Equal(Logits(decompressed: true), written);
            Assert.NotEqual(Logits(decompressed: false), written);
        }
        finally
        {
            File.Delete(path);
            File.Delete(logitsPath);
        }
    }

    [Fact]
    public void RawAndChatPromptsGenerate()
    {
        var (code, output, error) = Invoke("generate", "-m", _path, "-p", "the cat", "--raw", "-n", "4", "--seed", "1");
        Assert.True(code == 0, error);
        Assert.Contains("generated at", error);
        (code, _, error) = Invoke("generate", "-m", _path, "-p", "hello", "-n", "4", "--temp", "0");
        Assert.True(code == 0, error);
    }

    [Theory]
    [InlineData("generate", "-m", "/nonexistent/model.gguf", "-p", "x")]
    [InlineData("generate", "-m", "MODEL", "-p", "x", "--prompt-tokens", "1")]
    [InlineData("generate", "-m", "MODEL", "--prompt-tokens", "1,banana")]
    [InlineData("generate", "-m", "MODEL", "-p", "x", "--top-p", "0")]
    [InlineData("generate", "-m", "MODEL", "--prompt-tokens", "999999")]
    [InlineData("generate", "-m", "MODEL", "-p", "x", "-t", "0")]
    [InlineData("demo", "-n", "4", "-t", "-1")]
    [InlineData("perplexity", "-m", "MODEL", "-f", "MODEL", "-t", "0")]
    public void BadInputGetsAOneLineError(params string[] args)
    {
        var (code, _, error) = Invoke([.. args.Select(a => a == "MODEL" ? _path : a)]);
        Assert.NotEqual(0, code);
        Assert.StartsWith("error:", error.Trim());
        Assert.DoesNotContain("   at ", error);
    }

    [Fact]
    public void RunWithoutAModelSaysHowToGetOne()
    {
        var (code, _, error) = Invoke("run");
        Assert.Equal(2, code);
        Assert.Contains("fathom demo", error);
    }

    [Fact]
    public void InteractiveChatHandlesCommandsAndTurns()
    {
        using LoadedModel model = LoadedModel.Open(_path, new ModelOptions { Threads = 1 });
        var chat = new RunCommand.Chat(model, model.CreateSession(256), SamplingOptions.Greedy, maxTokens: 5, systemPrompt: null);
        var output = new StringWriter();
        var error = new StringWriter();
        var input = new StringReader("/help\n/set temp 0.7\n/set top-p 2\nhello\nand again\n/clear\n/bogus\n/exit\n");
        int code = chat.Loop(input, output, error, new StreamingConsole(output, showReasoning: true));
        Assert.Equal(0, code);
        string text = output.ToString();
        Assert.Contains("/clear", text);
        Assert.Contains("temp = 0.7", text);
        Assert.Contains("Bad value", text);
        Assert.Contains("Conversation cleared.", text);
        Assert.Contains("Unknown command", text);
        Assert.Equal(2, error.ToString().Split('\n').Count(l => l.Contains("generated at")));
    }

    [Fact]
    public void DemoRunsTheWholePipeline()
    {
        var (code, output, error) = Invoke("demo", "-n", "8", "-t", "2");
        Assert.True(code == 0, error + output);
        Assert.Contains("split parts", output);
        Assert.Contains("RoutedExperts", output);
        Assert.Contains("DeepSeek", output);
        Assert.Contains("generated at", output);
    }
}
