using System.Diagnostics;
using System.Text.Json.Nodes;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Tests.Models;

namespace Fathom.Tests.Runtime;

/// <summary>
/// Weights are used where they lie in the file's memory map: <c>fathom generate</c>, run as a child process whose GC
/// heap is capped far below the model file's size, still loads the model and generates the tokens an in-process
/// run gives. A control run under the same cap with a KV cache (a GC array) smaller than the file fails, so the cap
/// is really in force.
/// </summary>
public sealed class LargerThanHeapModelTests : IDisposable
{
    private const long HeapLimit = 64L << 20;
    private static readonly int[] Prompt = [5, 17, 200, 33];

    // 4 llama layers of 1024 × (4·1024 + 3·4096) F32 weights: 256 MiB of weights, four times the heap limit.
    private static readonly SyntheticModelSpec Spec = new()
    {
        Architecture = "llama", VocabSize = 384, HiddenSize = 1024, Layers = 4, Heads = 8, KvHeads = 8, FeedForward = 4096,
        WeightScale = 2f, Fill = WeightFill.Tiled, Seed = 21,
    };

    private readonly string _path = ModelTestKit.Synthesize(Spec);

    public void Dispose() => File.Delete(_path);

    [Fact]
    public void AModelFourTimesTheHeapLimitLoadsAndGenerates()
    {
        long fileSize = new FileInfo(_path).Length;
        Assert.True(fileSize > 4 * HeapLimit, $"the model file ({fileSize} bytes) should be over four times the heap limit");

        int[] expected;
        using (Model model = ModelLoader.Load(_path, new ModelOptions { Threads = 2 }))
            expected = [.. ModelTestKit.Greedy(model, Prompt, Prompt.Length + 2).Tokens.Skip(Prompt.Length)];

        // 64 positions of cache: 4 layers × 2 × 1024 floats each, 2 MiB.
        (int code, string output, string error) = RunCli("generate", "-m", _path, "--prompt-tokens", string.Join(',', Prompt),
            "-n", "2", "--temp", "0", "--json", "-t", "2", "-c", "64");
        Assert.True(code == 0, $"fathom generate failed under a {HeapLimit >> 20} MiB heap (exit {code}): {error}");
        int[] generated = [.. JsonNode.Parse(output)!["generatedTokens"]!.AsArray().Select(n => (int)n!)];
        Assert.Equal(expected, generated);

        // The default 4096-position cache is 128 MiB of GC arrays, half the model's size: under the cap it cannot exist.
        (code, _, error) = RunCli("generate", "-m", _path, "--prompt-tokens", string.Join(',', Prompt), "-n", "1", "--temp", "0", "-t", "2");
        Assert.True(code != 0, "a 128 MiB KV cache was allocated under a 64 MiB heap limit: the limit is not in force");
        Assert.Contains("OutOfMemory", error);
    }

    /// <summary>Runs the CLI assembly that the test project references, in a new process with the heap cap set.</summary>
    private static (int Code, string Output, string Error) RunCli(params string[] args)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host
            : Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        var start = new ProcessStartInfo(dotnet) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Fathom.Cli.dll"));
        foreach (string a in args) start.ArgumentList.Add(a);
        start.Environment["DOTNET_GCHeapHardLimit"] = "0x" + HeapLimit.ToString("X");
        using Process process = Process.Start(start)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(60_000))
        {
            process.Kill();
            throw new TimeoutException($"fathom {string.Join(' ', args)} did not finish in 60 s");
        }
        return (process.ExitCode, output.Result, error.Result);
    }
}
