using System.Runtime.InteropServices;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Cuda.Nvrtc;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Programmatic dependent launch (CudaBackend.ProgrammaticLaunches.cs): the launch structs match cuda.h, every kernel
/// waits for the previous one before anything but its weight prefetch, and decode steps launched programmatically
/// (recorded into graphs with programmatic edges, and replayed) give bit for bit the logits of plain launches.
/// </summary>
public sealed class ProgrammaticLaunchTests(GpuFixture gpu)
{
    /// <summary>cuda.h (CUDA 12/13, 64-bit): CUlaunchConfig is 7 unsigned ints, then the stream, the attribute pointer
    /// and their count; CUlaunchAttribute is the id padded to 8 bytes and a 64-byte value union.</summary>
    [Fact]
    public void LaunchStructsHaveCudaHsLayout()
    {
        Assert.Equal(56, Marshal.SizeOf<LaunchConfig>());
        Assert.Equal(0, (int)Marshal.OffsetOf<LaunchConfig>(nameof(LaunchConfig.GridX)));
        Assert.Equal(12, (int)Marshal.OffsetOf<LaunchConfig>(nameof(LaunchConfig.BlockX)));
        Assert.Equal(24, (int)Marshal.OffsetOf<LaunchConfig>(nameof(LaunchConfig.SharedBytes)));
        Assert.Equal(32, (int)Marshal.OffsetOf<LaunchConfig>(nameof(LaunchConfig.Stream)));
        Assert.Equal(40, (int)Marshal.OffsetOf<LaunchConfig>(nameof(LaunchConfig.Attributes)));
        Assert.Equal(48, (int)Marshal.OffsetOf<LaunchConfig>(nameof(LaunchConfig.AttributeCount)));
        Assert.Equal(72, Marshal.SizeOf<LaunchAttribute>());
        Assert.Equal(0, (int)Marshal.OffsetOf<LaunchAttribute>(nameof(LaunchAttribute.Id)));
        Assert.Equal(8, (int)Marshal.OffsetOf<LaunchAttribute>(nameof(LaunchAttribute.Value)));
        Assert.Equal(6, LaunchAttribute.ProgrammaticStreamSerialization); // CUlaunchAttributeID: 7 is PROGRAMMATIC_EVENT
        unsafe
        {
            Assert.Equal(56, sizeof(LaunchConfig)); // what the driver reads, not only the marshaled form
            Assert.Equal(72, sizeof(LaunchAttribute));
        }
    }

    [Fact]
    public void EveryKernelWaitsForThePreviousOneFirst()
    {
        string source = KernelSources.All;
        IReadOnlyList<(string Kernel, string Statement)> kernels = FirstStatements(source);
        Assert.True(kernels.Count >= 40, $"only {kernels.Count} kernels found");
        string[] late = kernels.Where(k => !WaitsFirst(k.Statement)).Select(k => $"{k.Kernel}: {k.Statement}").ToArray();
        Assert.True(late.Length == 0, "kernels that do not wait first:\n" + string.Join("\n", late));
        // Only these fetch weights before the wait: the one-token products matvec_q_T, group_matvec_q_T, stacked_matvec_q_T,
        // and their fast K-quant forms matvec_qk_T & co. (one source: FATHOM_MATVEC_ENTRY_POINTS), the row-split
        // transposed products transposed_split_T and transposed_split1_T, the router's rows in router_route, and the
        // wide norm's weight slice in rms_norm_row_wide.
        Assert.Equal(2, kernels.Count(k => k.Statement.StartsWith("FATHOM_PREFETCH_THEN_WAIT(matvec_q_prefetch(", StringComparison.Ordinal)));
        Assert.Equal(1, kernels.Count(k => k.Statement.StartsWith("FATHOM_PREFETCH_THEN_WAIT(stacked_matvec_q_prefetch(", StringComparison.Ordinal)));
        Assert.Equal(1, kernels.Count(k => k.Statement.StartsWith("FATHOM_PREFETCH_THEN_WAIT(transposed_split_prefetch(", StringComparison.Ordinal)));
        Assert.Equal(2, kernels.Count(k => k.Statement.StartsWith("FATHOM_PREFETCH_THEN_WAIT(prefetch_l2(", StringComparison.Ordinal)));
        // On Hopper and later the wait is the hardware's; without it programmatic launches are never turned on.
        int define = source.IndexOf("#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900\n#define FATHOM_WAIT_PREVIOUS()", StringComparison.Ordinal);
        Assert.True(define >= 0, "FATHOM_WAIT_PREVIOUS is not defined for sm_90+");
        Assert.Contains("griddepcontrol.wait;", source.AsSpan(define, 400).ToString());
    }

    [Fact]
    public void TheScanFindsAKernelThatDoesNotWaitFirst()
    {
        const string source = """
            extern "C" __global__ void good(float* y) // a comment { with a brace
            {
                /* leading comment */ FATHOM_WAIT_PREVIOUS();
                y[0] = 1.0f;
            }
            #define FAMILY(T)                                                  \
            extern "C" __global__ void __launch_bounds__(128) bad_##T(float* y) \
            {                                                                  \
                y[threadIdx.x] = 0.0f;                                         \
                FATHOM_WAIT_PREVIOUS();                                        \
            }
            """;
        IReadOnlyList<(string Kernel, string Statement)> kernels = FirstStatements(source);
        Assert.Equal(2, kernels.Count);
        Assert.True(WaitsFirst(kernels[0].Statement), kernels[0].Statement);
        Assert.False(WaitsFirst(kernels[1].Statement));
        Assert.Equal("y[threadIdx.x] = 0.0f;", kernels[1].Statement);
    }

    [Theory]
    [InlineData("--gpu-architecture=sm_90a", 90)]
    [InlineData("--gpu-architecture=compute_86", 86)]
    [InlineData("--gpu-architecture=sm_100", 100)]
    [InlineData("--gpu-architecture", 0)]
    public void TheCompiledArchitectureIsReadFromTheTarget(string option, int architecture) =>
        Assert.Equal(architecture, CompileTarget.ArchitectureOf(option));

    /// <summary>
    /// A Qwen2 model in Q4_K (the one-token products that prefetch before the wait) and a DeepSeek R1-shaped one
    /// (MLA, routed experts through grouped products whose matrices the previous kernel chooses): prompts, then decode
    /// steps of two sessions in turn, recorded and replayed as graphs, with programmatic launches and without.
    /// </summary>
    [Theory]
    [InlineData("qwen2")]
    [InlineData("deepseek2")]
    public void ProgrammaticStepsEqualPlainOnesBitForBit(string architecture)
    {
        gpu.Require();
        if (!gpu.Backend.ProgrammaticLaunches)
            Assert.Skip($"programmatic launches are off here (compute capability {gpu.Backend.Device.ComputeCapability}, driver {gpu.Context.Driver.Version}, kernels for {gpu.Backend.KernelOrigin.Target}, FATHOM_CUDA_PDL={Environment.GetEnvironmentVariable("FATHOM_CUDA_PDL")})");
        SyntheticModelSpec spec = architecture == "qwen2"
            ? new SyntheticModelSpec
            {
                Architecture = "qwen2", VocabSize = 384, HiddenSize = 256, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 512,
                DefaultType = GgmlType.Q4_K, WeightScale = 1f, Seed = 41,
            }
            : SyntheticPresets.TinyDeepSeekR1 with
            {
                VocabSize = 512, WeightScale = 1f, Seed = 43,
                TypeFor = n => n.Contains("_shexp") || n == "output.weight" ? GgmlType.Q6_K : GgmlType.Q4_K,
            };
        using var synthesized = new SynthesizedGguf(spec, $"fathom-cuda-pdl-{architecture}");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model programmatic = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = true, ProgrammaticLaunches = true } });
        using Model plain = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = true, ProgrammaticLaunches = false } });
        var backend = (CudaBackend)programmatic.Backend;
        Assert.True(backend.ProgrammaticLaunches);
        Assert.False(((CudaBackend)plain.Backend).ProgrammaticLaunches);
        List<float[]> expected = Run(plain), actual = Run(programmatic);
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
            Assert.True(expected[i].AsSpan().SequenceEqual(actual[i]), $"pass {i}: programmatic launches changed the logits");
        Assert.True(backend.GraphReplays >= 10, $"only {backend.GraphReplays} programmatic steps were replayed: {string.Join(" | ", backend.GraphMisses)}");
    }

    /// <summary>A step recorded with programmatic launches is not replayed by a step launched plainly, nor the other way.</summary>
    [Fact]
    public void TurningProgrammaticLaunchesOverRecordsAnew()
    {
        gpu.Require();
        if (!gpu.Backend.ProgrammaticLaunches) Assert.Skip("programmatic launches are off here");
        var spec = new SyntheticModelSpec
        {
            Architecture = "qwen2", VocabSize = 320, HiddenSize = 256, Layers = 1, Heads = 4, KvHeads = 2, FeedForward = 512,
            DefaultType = GgmlType.Q4_K, WeightScale = 1f, Seed = 45,
        };
        using var synthesized = new SynthesizedGguf(spec, "fathom-cuda-pdl-switch");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model model = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = true, ProgrammaticLaunches = true } });
        var backend = (CudaBackend)model.Backend;
        InferenceSession session = model.CreateSession(64);
        model.Forward(session, [1, 2, 3]);
        for (int i = 0; i < 4; i++) model.Forward(session, [5 + i]); // follows the prompt plainly, then recorded, then replayed
        long recordings = backend.GraphRecordings;
        Assert.Equal(1, recordings);
        backend.ProgrammaticLaunches = false;
        for (int i = 0; i < 3; i++) model.Forward(session, [9 + i]);
        Assert.Equal(2, backend.GraphRecordings); // plain launches: the first check misses, one recording, then replays
        backend.ProgrammaticLaunches = true;
        for (int i = 0; i < 3; i++) model.Forward(session, [12 + i]);
        Assert.Equal(2, backend.GraphRecordings); // the programmatic recording is still kept: checked and replayed
    }

    private static List<float[]> Run(Model model)
    {
        var logits = new List<float[]>();
        var random = new Random(7);
        int[] Tokens(int count) => Enumerable.Range(0, count).Select(_ => random.Next(model.VocabSize)).ToArray();
        InferenceSession first = model.CreateSession(128), second = model.CreateSession(128);
        logits.Add(model.Forward(first, Tokens(40)));
        logits.Add(model.Forward(second, Tokens(3)));
        for (int step = 0; step < 8; step++) logits.Add(model.Forward(first, Tokens(1)));
        for (int step = 0; step < 6; step++)
        {
            logits.Add(model.Forward(first, Tokens(1)));
            logits.Add(model.Forward(second, Tokens(1)));
        }
        return logits;
    }

    /// <summary>
    /// No kernel takes more parameters than <see cref="KernelArguments"/> holds: a longer list would be found only by
    /// its first launch (on a GPU), which throws.
    /// </summary>
    [Fact]
    public void EveryKernelTakesNoMoreParametersThanALaunchHolds()
    {
        string code = StripComments(KernelSources.All.Replace("\r\n", "\n").Replace("\\\n", " "));
        int kernels = 0;
        var tooLong = new List<string>();
        for (int at = code.IndexOf("__global__", StringComparison.Ordinal); at >= 0; at = code.IndexOf("__global__", at + 1, StringComparison.Ordinal))
        {
            int open = code.IndexOf('(', code.IndexOf("void", at, StringComparison.Ordinal));
            int depth = 0, parameters = 1, close = open;
            for (; close < code.Length; close++)
            {
                char c = code[close];
                if (c == '(') depth++;
                else if (c == ')' && --depth == 0) break;
                else if (c == ',' && depth == 1) parameters++;
            }
            kernels++;
            if (parameters > KernelArguments.Capacity) tooLong.Add($"{Collapse(code[at..open])}: {parameters}");
        }
        Assert.True(kernels >= 40, $"only {kernels} kernels found");
        Assert.True(tooLong.Count == 0, $"kernels with more than {KernelArguments.Capacity} parameters:\n" + string.Join("\n", tooLong));
    }

    private static bool WaitsFirst(string statement) =>
        statement == "FATHOM_WAIT_PREVIOUS();" || statement.StartsWith("FATHOM_PREFETCH_THEN_WAIT(", StringComparison.Ordinal);

    /// <summary>
    /// Each <c>__global__</c> function's head (up to its parameter list) and the first statement of its body (up to its
    /// first <c>;</c>), from the source with lines spliced and comments dropped, as the preprocessor sees it, and
    /// whitespace collapsed.
    /// </summary>
    private static List<(string Kernel, string Statement)> FirstStatements(string source)
    {
        string code = StripComments(source.Replace("\r\n", "\n").Replace("\\\n", " "));
        var found = new List<(string, string)>();
        for (int at = code.IndexOf("__global__", StringComparison.Ordinal); at >= 0; at = code.IndexOf("__global__", at + 1, StringComparison.Ordinal))
        {
            int open = code.IndexOf('{', at);
            int end = open < 0 ? -1 : code.IndexOf(';', open);
            Assert.True(open > 0 && end > open, $"a kernel without a body at offset {at}");
            found.Add((Collapse(code[at..Math.Min(open, at + 120)]), Collapse(code[(open + 1)..(end + 1)])));
        }
        return found;
    }

    private static string Collapse(string text) => string.Join(' ', text.Split((char[])[' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries));

    /// <summary>The source with <c>//</c> and <c>/* */</c> comments turned into spaces (string literals kept).</summary>
    private static string StripComments(string source)
    {
        var text = new System.Text.StringBuilder(source.Length);
        for (int i = 0; i < source.Length; i++)
        {
            if (source[i] == '"')
            {
                int close = i + 1;
                while (close < source.Length && source[close] != '"') close += source[close] == '\\' ? 2 : 1;
                close = Math.Min(close + 1, source.Length);
                text.Append(source, i, close - i);
                i = close - 1;
            }
            else if (i + 1 < source.Length && source[i] == '/' && (source[i + 1] == '/' || source[i + 1] == '*'))
            {
                bool line = source[i + 1] == '/';
                int close = line ? source.IndexOf('\n', i) : source.IndexOf("*/", i + 2, StringComparison.Ordinal);
                close = close < 0 ? source.Length : line ? close : close + 2;
                text.Append(' ');
                i = close - 1;
            }
            else
            {
                text.Append(source[i]);
            }
        }
        return text.ToString();
    }
}
