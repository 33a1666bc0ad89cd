using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>
/// One session's part of a <see cref="Model.ForwardBatch"/> step: <see cref="Tokens"/> (a prompt chunk, or the one
/// token just sampled) appended at the session's next positions.
/// </summary>
public readonly record struct BatchSequence(InferenceSession Session, ReadOnlyMemory<int> Tokens);
