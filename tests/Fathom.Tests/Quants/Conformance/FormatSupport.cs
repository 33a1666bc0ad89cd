using System.Reflection;
using Fathom.Quants;
using Xunit.Sdk;

namespace Fathom.Tests.Quants.Conformance;

public enum FormatCapability { Dequantize, Quantize, Dot }

/// <summary>
/// Which parts of each format are implemented, found by calling them on one all-zero block: a placeholder throws
/// <see cref="NotImplementedException"/>. Anything else (even another exception) counts as implemented, so the
/// real tests get to report it.
/// </summary>
public static class FormatSupport
{
    public static bool IsImplemented(WeightFormat format, FormatCapability capability)
    {
        // A length that is whole blocks of both the weight and the activation format.
        int n = Math.Max(format.Layout.BlockSize, GgmlTypes.Layout(format.DotActivationType).BlockSize);
        var blocks = new byte[format.Layout.RowBytes(n)];
        try
        {
            switch (capability)
            {
                case FormatCapability.Dequantize:
                    format.Dequantize(blocks, new float[n]);
                    break;
                case FormatCapability.Quantize:
                    float[] importance = format.RequiresImportance ? Enumerable.Repeat(1f, n).ToArray() : [];
                    format.Quantize(new float[n], blocks, importance);
                    break;
                case FormatCapability.Dot:
                    var activations = new byte[GgmlTypes.Layout(format.DotActivationType).RowBytes(n)];
                    format.Dot(blocks, activations, n, KernelPath.Scalar);
                    break;
            }
            return true;
        }
        catch (NotImplementedException)
        {
            return false;
        }
        catch (Exception)
        {
            return true;
        }
    }

    /// <summary>Types some format uses as its dot product's activation format (ggml's vec_dot_type).</summary>
    public static bool IsActivationType(GgmlType type) => TypeTraits.All.Any(f => f.DotActivationType == type);

    public static IEnumerable<GgmlType> Types(FormatCapability capability, bool implemented, bool activationTypesOnly = false) =>
        TypeTraits.All
            .Where(f => !activationTypesOnly || IsActivationType(f.Type))
            .Where(f => IsImplemented(f, capability) == implemented)
            .Select(f => f.Type);
}

/// <summary>Theory data: every type whose <see cref="FormatCapability"/> is implemented.</summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
public sealed class ImplementedFormatsAttribute(FormatCapability capability, bool activationTypesOnly = false) : DataAttribute
{
    public override IEnumerable<object[]> GetData(MethodInfo testMethod) =>
        FormatSupport.Types(capability, implemented: true, activationTypesOnly).Select(t => new object[] { t });
}

/// <summary>
/// Theory data for the types whose <see cref="FormatCapability"/> still throws NotImplementedException: they show up
/// as skipped rows with the type in the name, and the attribute yields nothing once every type is implemented.
/// </summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
public sealed class PendingFormatsAttribute : DataAttribute
{
    private readonly FormatCapability _capability;
    private readonly bool _activationTypesOnly;

    public PendingFormatsAttribute(FormatCapability capability, bool activationTypesOnly = false)
    {
        _capability = capability;
        _activationTypesOnly = activationTypesOnly;
        Skip = $"{capability} not implemented yet (placeholder throws NotImplementedException)";
    }

    public override IEnumerable<object[]> GetData(MethodInfo testMethod) =>
        FormatSupport.Types(_capability, implemented: false, _activationTypesOnly).Select(t => new object[] { t });
}
