using Fathom.Cuda;
using Fathom.Cuda.Discovery;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;

[assembly: AssemblyFixture(typeof(Fathom.Cuda.Tests.GpuFixture))]
// One GPU backend serves every test, and a backend runs one operation at a time.
[assembly: Xunit.v3.Parallelization(Mode = Xunit.Sdk.ParallelMode.None)]

namespace Fathom.Cuda.Tests;

/// <summary>
/// The GPU every GPU test shares: a context, the loaded kernels and a backend, made once. Where there is no usable
/// GPU (CI), <see cref="Require"/> skips the calling test with the reason <see cref="CudaEnvironment"/> gives.
/// </summary>
public sealed class GpuFixture : IDisposable
{
    private readonly CudaContext? _context;
    private readonly CudaKernels? _kernels;
    private readonly CudaBackend? _backend;

    public GpuFixture()
    {
        CudaEnvironment environment = CudaEnvironment.Detect();
        if (!environment.Usable)
        {
            SkipReason = $"no usable CUDA GPU: {environment.Problem}";
            TestContext.Current.SendDiagnosticMessage($"GPU tests will be skipped: {SkipReason}");
            return;
        }
        try
        {
            _context = new CudaContext(0);
            _kernels = new CudaKernels(_context);
            _backend = new CudaBackend(0);
        }
        catch (CudaException e)
        {
            // On a machine that has a GPU this is a failure of every GPU test, not a skip; the tests that need no
            // GPU still run.
            SetupError = e;
        }
    }

    public string? SkipReason { get; }

    /// <summary>Why the GPU could not be set up although CUDA is present; GPU tests fail with it.</summary>
    public CudaException? SetupError { get; }

    public CudaContext Context => Require()._context!;
    public CudaKernels Kernels => Require()._kernels!;
    public CudaBackend Backend => Require()._backend!;

    /// <summary>A pinned copy of <paramref name="values"/> attached to <see cref="Backend"/>: its results stay on the device until read back.</summary>
    public float[] Attached(float[] values)
    {
        float[] buffer = TestData.Pinned(values);
        Backend.Attach(buffer);
        return buffer;
    }

    /// <summary>Skips the running test (visibly, with the reason) when there is no GPU.</summary>
    public GpuFixture Require()
    {
        if (SkipReason is not null) Assert.Skip(SkipReason);
        if (SetupError is not null) throw new InvalidOperationException($"CUDA is present but the kernels could not be set up: {SetupError.Message}", SetupError);
        return this;
    }

    public void Dispose()
    {
        _backend?.Dispose();
        _kernels?.Dispose();
        _context?.Dispose();
    }
}
