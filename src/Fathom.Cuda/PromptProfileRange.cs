using Fathom.Cuda.Driver;

namespace Fathom.Cuda;

/// <summary>
/// FATHOM_CUDA_PROFILE_PROMPT=N: a profiler range (cuProfilerStart/Stop) around the N-th forward pass of more than one
/// token only, so <c>ncu --profile-from-start off</c> measures the kernels of exactly one prompt pass (a benchmark's
/// warm-up prompt, which uploads the weights on first use, is pass 1; its first timed prompt pass 2). The stream is
/// synchronized at both ends, so the range holds that pass's kernels and nothing else.
/// </summary>
internal sealed class PromptProfileRange(CudaContext context, long profiledPass)
{
    private long _promptPasses;
    private bool _open;

    public static PromptProfileRange? FromEnvironment(CudaContext context) =>
        long.TryParse(Environment.GetEnvironmentVariable("FATHOM_CUDA_PROFILE_PROMPT"), out long n) && n > 0 ? new PromptProfileRange(context, n) : null;

    /// <summary>A forward pass of <paramref name="tokens"/> starts; the N-th of several tokens opens the range.</summary>
    public void BeginForward(int tokens)
    {
        if (tokens <= 1 || ++_promptPasses != profiledPass) return;
        context.Synchronize("the profiled prompt's start");
        context.Driver.ProfilerRange(start: true);
        _open = true;
    }

    /// <summary>The pass ends: an open range closes once its kernels are done.</summary>
    public void EndForward()
    {
        if (!_open) return;
        _open = false;
        context.Synchronize("the profiled prompt");
        context.Driver.ProfilerRange(start: false);
    }
}
