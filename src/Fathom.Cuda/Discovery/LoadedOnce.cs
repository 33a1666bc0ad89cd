using System.Diagnostics.CodeAnalysis;
using Fathom.Cuda.Driver;

namespace Fathom.Cuda.Discovery;

/// <summary>
/// A native library wrapper loaded at most once per process: the first caller loads it, and later callers get the
/// same instance, or the same <see cref="CudaException"/> if loading failed (a missing library stays missing, and
/// its report is not rebuilt on every call).
/// </summary>
internal sealed class LoadedOnce<T>(Func<T> load) where T : class
{
    private readonly Lock _gate = new();
    private T? _instance;
    private CudaException? _failure;

    public bool TryGet([NotNullWhen(true)] out T? instance, [NotNullWhen(false)] out CudaException? failure)
    {
        lock (_gate)
        {
            if (_instance is null && _failure is null)
            {
                try
                {
                    _instance = load();
                }
                catch (CudaException e)
                {
                    _failure = e;
                }
            }
            instance = _instance;
            failure = _failure;
            return instance is not null;
        }
    }
}
