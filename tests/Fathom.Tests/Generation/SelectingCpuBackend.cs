using Fathom.Cpu;
using Fathom.Runtime;
using Fathom.Runtime.Sampling;

namespace Fathom.Tests.Generation;

/// <summary>
/// A <see cref="CpuBackend"/> that claims to select tokens itself (<see cref="ITokenSelectingBackend"/>) and does so
/// with the host reference, so the generator's selecting path — candidates, the sampler's proof, the fallback to the
/// full row — runs without a GPU. Counts its selections, and the reads of whole rows of <paramref name="vocabulary"/>
/// logits (the generator's fallback when the candidates do not decide a token).
/// </summary>
internal sealed class SelectingCpuBackend(int threads, int vocabulary) : ITokenSelectingBackend
{
    private readonly CpuBackend _cpu = new(threads);

    public int Selections { get; private set; }
    public int FullRowReads { get; private set; }
    /// <summary>The token count of every forward pass so far, in order.</summary>
    public List<int> PassTokens { get; } = [];

    /// <summary>The key of every forward pass so far, in order (a batch's: unknown).</summary>
    public List<ForwardKey> Keys { get; } = [];

    public void BeginForward(int tokens, int endPosition, bool replayable) => PassTokens.Add(tokens);

    public bool BeginForward(int tokens, int endPosition, bool replayable, in ForwardKey key, ReadOnlySpan<int> tokenIds)
    {
        Keys.Add(key);
        BeginForward(tokens, endPosition, replayable);
        return false;
    }

    public void ReadToHost(Span<float> values)
    {
        if (values.Length == vocabulary) FullRowReads++;
    }
    public bool SelectsTokens => true;

    public void SelectTokens(Span<float> logits, scoped in TokenSelectionRequest request, TokenCandidates result)
    {
        Selections++;
        HostTokenSelection.Select(logits, request, result);
    }

    public int Threads => _cpu.Threads;
    public void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens) => _cpu.MatMul(weight, input, output, tokens);
    public void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride) =>
        _cpu.MatMulGroup(weights, inputs, inputStride, outputs, outputStride);
    public void TransposedMatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
        int tokens = 1, int inputTokenStride = 0, int outputTokenStride = 0) =>
        _cpu.TransposedMatMulGroup(weights, inputs, inputStride, outputs, outputStride, tokens, inputTokenStride, outputTokenStride);
    public void RmsNorm(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int tokens, float epsilon) => _cpu.RmsNorm(input, weight, output, tokens, epsilon);
    public void Rope(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition) =>
        _cpu.Rope(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition);
    public void SiluMul(Span<float> gate, ReadOnlySpan<float> up) => _cpu.SiluMul(gate, up);
    public void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens) =>
        _cpu.Attention(queries, cache, output, shape, firstPosition, tokens);
    public void Dispose() => _cpu.Dispose();
}
