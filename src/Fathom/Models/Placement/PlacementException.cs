namespace Fathom.Models.Placement;

/// <summary>A model that does not fit the GPU as asked; the message gives the numbers per part and the options that help.</summary>
public sealed class PlacementException(string message) : Exception(message);
