using System.Text.Json.Nodes;
using Fathom.Cli;
using Fathom.Cuda.Discovery;

namespace Fathom.Cuda.Tests;

/// <summary><c>--gpu</c> on the command line: it runs on CUDA where there is a GPU and fails with the reason where there is none.</summary>
public sealed class GpuOptionTests(ITestOutputHelper log)
{
    [Fact]
    public void BenchWithGpuRunsOnCudaOrSaysWhyNot()
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int exit = FathomCommandLine.Invoke(["bench", "--like", "tiny-deepseek-r1", "--gpu", "-p", "64", "-n", "16", "-r", "1", "--json"], output, error);
        CudaEnvironment environment = CudaEnvironment.Detect();
        if (environment.Usable)
        {
            Assert.True(exit == 0, error.ToString());
            JsonNode json = JsonNode.Parse(output.ToString())!;
            Assert.Equal("cuda", json["backend"]!.GetValue<string>());
            Assert.Equal("measured", json["bandwidth_source"]!.GetValue<string>()); // the GPU's, not the host's
            Assert.InRange(json["bandwidth_gbps"]!.GetValue<double>(), 50, 20_000);
            log.WriteLine(output.ToString()); // this stage copies activations per operation; docs/gpu-notes.md keeps the numbers
        }
        else
        {
            Assert.Equal(1, exit);
            Assert.StartsWith("error: ", error.ToString());
            Assert.Contains(environment.DriverError ?? environment.NvrtcError ?? "GPU", error.ToString());
            Assert.Equal("", output.ToString());
        }
    }

    [Fact]
    public void GenerateWithGpuAndNoModelFileFailsOnTheFileFirst()
    {
        var error = new StringWriter();
        int exit = FathomCommandLine.Invoke(["generate", "-m", "/nonexistent/model.gguf", "--gpu", "-p", "hi"], new StringWriter(), error);
        Assert.NotEqual(0, exit);
        Assert.Contains("model.gguf", error.ToString());
    }
}
