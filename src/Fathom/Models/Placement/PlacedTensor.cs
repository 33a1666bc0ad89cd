namespace Fathom.Models.Placement;

/// <summary>One tensor of a <see cref="PlacementPlan"/>.</summary>
/// <param name="Layer">Its block; the block count for the output layer and the token embedding; -1 for other tensors outside blocks.</param>
/// <param name="FileBytes">Its bytes in the file (and in host memory).</param>
/// <param name="DeviceExtraBytes">What the GPU holds besides those bytes (the F32 transposed copy of a fused <c>attn_kv_b</c>).</param>
/// <param name="IsMatrix">Products read it; vectors (norms, biases) always stay with the activations on the GPU.</param>
public sealed record PlacedTensor(string Name, TensorGroup Group, int Layer, long FileBytes, long DeviceExtraBytes, bool IsMatrix, PlacementDevice Device)
{
    /// <summary>Bytes on the GPU when placed there.</summary>
    public long GpuFootprint => FileBytes + DeviceExtraBytes;

    /// <summary>Bytes on the device it is placed on.</summary>
    public long Bytes => Device == PlacementDevice.Gpu ? GpuFootprint : FileBytes;
}
