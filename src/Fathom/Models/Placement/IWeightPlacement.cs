using Fathom.Gguf;

namespace Fathom.Models.Placement;

/// <summary>
/// A backend that decides where a model's weights live (a GPU that keeps some on the CPU). <see cref="ModelLoader"/>
/// calls <see cref="PlaceWeights"/> once, before the model reads its tensors, so the backend sees every tensor at once.
/// </summary>
public interface IWeightPlacement
{
    /// <summary>Plans the placement of <paramref name="file"/>'s tensors; throws <see cref="PlacementException"/> when the model does not fit.</summary>
    void PlaceWeights(GgufFile file, ModelHyperparameters config);
}
