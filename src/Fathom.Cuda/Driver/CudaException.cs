namespace Fathom.Cuda.Driver;

/// <summary>A CUDA driver, NVRTC or discovery failure, naming the call that failed and the library's own error text.</summary>
public sealed class CudaException : Exception
{
    public CudaException(string message) : base(message) { }

    public CudaException(string call, int code, string description)
        : base($"{call} failed: {description} (error {code})")
    {
        Call = call;
        Code = code;
    }

    /// <summary>The API function that failed, when the error came from one.</summary>
    public string? Call { get; }

    /// <summary>The CUresult or nvrtcResult value; 0 when the error did not come from an API call.</summary>
    public int Code { get; }
}
