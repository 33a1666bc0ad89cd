namespace Fathom.Models.Placement;

/// <summary>One tensor of a <see cref="PlacementPlan"/>.</summary>
/// <param name="Layer">Its block; the block count for the output layer and the token embedding; -1 for other tensors outside blocks.</param>
/// <param name="Bytes">Its bytes in the file, and on whichever device holds it (every product reads weights in their own format).</param>
/// <param name="IsMatrix">Products read it; vectors (norms, biases) always stay with the activations on the GPU.</param>
public sealed record PlacedTensor(string Name, TensorGroup Group, int Layer, long Bytes, bool IsMatrix, PlacementDevice Device);
