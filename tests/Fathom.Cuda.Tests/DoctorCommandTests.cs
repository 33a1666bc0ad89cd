using System.Text.Json.Nodes;
using Fathom.Cli;
using Fathom.Cuda.Discovery;

namespace Fathom.Cuda.Tests;

/// <summary><c>fathom doctor</c> on whatever machine runs the tests: with or without a GPU it exits 0 and says what it found.</summary>
public sealed class DoctorCommandTests(ITestOutputHelper log)
{
    [Fact]
    public void TextReportNamesTheCpuPathsAndTheCudaVerdict()
    {
        var output = new StringWriter();
        var error = new StringWriter();
        Assert.Equal(0, FathomCommandLine.Invoke(["doctor"], output, error));
        string text = output.ToString();
        log.WriteLine(text); // the GPU run's record of what doctor found there
        Assert.Contains("kernel paths: Scalar", text);
        CudaEnvironment environment = CudaEnvironment.Detect();
        if (environment.Usable)
        {
            Assert.Contains("CUDA is usable", text);
            Assert.Contains("test on GPU 0: PASSED", text);
            Assert.Contains(environment.Gpus[0].Device.Name, text);
        }
        else
        {
            Assert.Contains("CUDA is not usable", text);
            Assert.Contains(environment.Problem!, text);
            if (environment.Driver is null) Assert.Contains("driver: MISSING: no CUDA driver found", text);
        }
        // cuBLAS: where it loaded from, or that it was not found and why (it is optional).
        bool blas = Fathom.Cuda.Blas.CublasLibrary.TryLoad(out Fathom.Cuda.Blas.CublasLibrary? cublas, out _);
        Assert.Contains(blas ? $"cuBLAS: {cublas!.Library.LoadedFrom}" : "cuBLAS: not found (optional", text);
        Assert.Equal("", error.ToString());
    }

    [Fact]
    public void JsonReportHasTheSameFacts()
    {
        var output = new StringWriter();
        Assert.Equal(0, FathomCommandLine.Invoke(["doctor", "--json"], output, new StringWriter()));
        JsonNode json = JsonNode.Parse(output.ToString())!;
        Assert.Equal("Scalar", json["cpu"]!["kernelPaths"]![0]!.GetValue<string>());
        CudaEnvironment environment = CudaEnvironment.Detect();
        Assert.Equal(environment.Usable, json["cuda"]!["usable"]!.GetValue<bool>());
        Assert.Equal(environment.Driver is not null, json["cuda"]!["driver"]!["found"]!.GetValue<bool>());
        Assert.Equal(environment.Gpus.Count, json["cuda"]!["gpus"]!.AsArray().Count);
        Assert.Equal(Fathom.Cuda.Blas.CublasLibrary.TryLoad(out _, out _), json["cuda"]!["cublas"]!["found"]!.GetValue<bool>());
        if (environment.Usable) Assert.True(json["cuda"]!["test"]!["passed"]!.GetValue<bool>());
        else Assert.Null(json["cuda"]!["test"]);
    }
}
