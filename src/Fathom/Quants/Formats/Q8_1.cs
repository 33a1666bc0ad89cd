namespace Fathom.Quants.Formats;

public sealed class Q8_1Format : WeightFormat
{
    public override GgmlType Type => GgmlType.Q8_1;
    public override GgmlType DotActivationType => GgmlType.Q8_1;
    public override IReadOnlyList<KernelPath> ImplementedPaths => [KernelPath.Scalar];
    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => throw new NotImplementedException();
    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance) => throw new NotImplementedException();
    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) => throw new NotImplementedException();
}
