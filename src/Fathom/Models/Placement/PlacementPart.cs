namespace Fathom.Models.Placement;

/// <summary>One tensor group's bytes on each device.</summary>
public sealed record PlacementPart(TensorGroup Group, long GpuBytes, long CpuBytes);
