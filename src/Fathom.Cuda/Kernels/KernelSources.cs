using System.Reflection;

namespace Fathom.Cuda.Kernels;

/// <summary>The CUDA C sources embedded in this assembly (Kernels/*.cu), joined into the one translation unit NVRTC compiles.</summary>
public static class KernelSources
{
    /// <summary>Order matters: helpers, then the decoders, then the kernels that use them.</summary>
    private static readonly string[] Files = ["common.cuh", "decode.cu", "activations.cu", "matmul.cu", "ops.cu", "matvec_q.cu", "matvec_iq.cu", "prompt_products.cu", "attention_prefill.cu", "attention_decode.cu", "experts.cu", "mmq.cu", "moe_prompt.cu", "transposed.cu", "sampling.cu"];

    private static readonly Lazy<string> Joined = new(() => string.Join("\n", Files.Select(f => $"// ---- {f}\n{Read(f)}")));

    /// <summary>Every kernel Fathom launches.</summary>
    public static string All => Joined.Value;

    /// <summary>A minimal program for <c>fathom doctor</c>'s compile-and-launch check.</summary>
    public const string Smoke = """
        extern "C" __global__ void smoke_axpi(const float* x, float* y, float a, int n)
        {
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) y[i] = a * x[i] + (float)i;
        }
        """;

    public static string Read(string file)
    {
        using Stream stream = Assembly.GetExecutingAssembly().GetManifestResourceStream($"Fathom.Cuda.Kernels.{file}")
            ?? throw new InvalidOperationException($"the embedded kernel source {file} is missing from Fathom.Cuda");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
