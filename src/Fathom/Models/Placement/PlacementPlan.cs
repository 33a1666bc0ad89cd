using System.Globalization;
using System.Text;

namespace Fathom.Models.Placement;

/// <summary>
/// Where each of a model's tensors lives (<see cref="PlacementPlanner"/> makes it), with the bytes per part and per
/// device. A backend asks <see cref="DeviceOf"/> for each weight a product reads; names of weights cut from a tensor
/// (an expert of a stack, a head's rows, a transposed copy) resolve to that tensor.
/// </summary>
public sealed class PlacementPlan
{
    private readonly Dictionary<string, PlacementDevice>.AlternateLookup<ReadOnlySpan<char>> _devices;

    public PlacementPlan(IReadOnlyList<PlacedTensor> tensors, string choice, DeviceMemoryReserve reserve, int contextSize, long? freeBytes)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        Tensors = tensors;
        Choice = choice;
        Reserve = reserve;
        ContextSize = contextSize;
        FreeBytes = freeBytes;
        var devices = new Dictionary<string, PlacementDevice>(StringComparer.Ordinal);
        foreach (PlacedTensor t in tensors) devices[t.Name] = t.Device;
        _devices = devices.GetAlternateLookup<ReadOnlySpan<char>>();
        HasCpuWeights = tensors.Any(t => t.Device == PlacementDevice.Cpu);
        Parts = [.. tensors.GroupBy(t => t.Group).OrderBy(g => g.Key).Select(g => new PlacementPart(g.Key,
            g.Where(t => t.Device == PlacementDevice.Gpu).Sum(t => t.Bytes), g.Where(t => t.Device == PlacementDevice.Cpu).Sum(t => t.Bytes)))];
    }

    public IReadOnlyList<PlacedTensor> Tensors { get; }

    /// <summary>How the placement was chosen, as options (with <c>--fit</c>: the options it amounts to).</summary>
    public string Choice { get; }

    public DeviceMemoryReserve Reserve { get; }
    public int ContextSize { get; }

    /// <summary>GPU memory free when the plan was made; null when not known (no GPU asked).</summary>
    public long? FreeBytes { get; }

    public IReadOnlyList<PlacementPart> Parts { get; }

    /// <summary>Some weights stay on the CPU (products reading them run there).</summary>
    public bool HasCpuWeights { get; }

    public long GpuWeightBytes => Parts.Sum(p => p.GpuBytes);
    public long CpuWeightBytes => Parts.Sum(p => p.CpuBytes);

    /// <summary>Weights on the GPU plus the KV cache and scratch.</summary>
    public long GpuBytes => GpuWeightBytes + Reserve.Bytes;

    /// <summary>
    /// The device of the tensor a weight comes from. A weight's name is its tensor's (<c>blk.3.ffn_up_exps.weight</c>)
    /// or starts with it (<c>…weight[5]</c>, <c>…weight.k[2]</c>); unknown names (weights made outside
    /// a file) are on the GPU. Allocates nothing.
    /// </summary>
    public PlacementDevice DeviceOf(ReadOnlySpan<char> weightName) =>
        _devices.TryGetValue(TensorName(weightName), out PlacementDevice device) ? device : PlacementDevice.Gpu;

    /// <summary>The tensor name at the start of a weight's name: through the first <c>.weight</c>, or all of it.</summary>
    public static ReadOnlySpan<char> TensorName(ReadOnlySpan<char> weightName)
    {
        int at = weightName.IndexOf(".weight".AsSpan(), StringComparison.Ordinal);
        return at < 0 ? weightName : weightName[..(at + ".weight".Length)];
    }

    /// <summary>The summary printed at load: bytes per part on each device, the reserve, and the free memory.</summary>
    public string Describe()
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"placement: {Choice}\n");
        text.Append(CultureInfo.InvariantCulture, $"  {"part",-22} {"GPU",12} {"CPU",12}\n");
        foreach (PlacementPart p in Parts)
            text.Append(CultureInfo.InvariantCulture, $"  {PartName(p.Group),-22} {Gib(p.GpuBytes),12} {Gib(p.CpuBytes),12}\n");
        text.Append(CultureInfo.InvariantCulture, $"  {"weights",-22} {Gib(GpuWeightBytes),12} {Gib(CpuWeightBytes),12}\n");
        text.Append(CultureInfo.InvariantCulture, $"  {$"KV cache ({ContextSize} tokens)",-22} {Gib(Reserve.KvCacheBytes),12}\n");
        text.Append(CultureInfo.InvariantCulture, $"  {"scratch (estimate)",-22} {Gib(Reserve.ScratchBytes),12}\n");
        if (Reserve.StreamingBytes > 0) text.Append(CultureInfo.InvariantCulture, $"  {"streamed experts",-22} {Gib(Reserve.StreamingBytes),12}\n");
        text.Append(CultureInfo.InvariantCulture, $"  {"GPU total",-22} {Gib(GpuBytes),12}");
        if (FreeBytes is long free) text.Append(CultureInfo.InvariantCulture, $"  of {Gib(free)} free");
        return text.ToString();
    }

    internal static string PartName(TensorGroup group) => group switch
    {
        TensorGroup.Embeddings => "token embedding",
        TensorGroup.Attention => "attention",
        TensorGroup.DenseFeedForward => "dense feed-forward",
        TensorGroup.RoutedExperts => "routed experts",
        TensorGroup.SharedExperts => "shared experts",
        TensorGroup.RouterAndNorms => "router and norms",
        TensorGroup.Output => "output",
        _ => "other",
    };

    internal static string Gib(long bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):F2} GiB");
}
