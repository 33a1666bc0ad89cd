using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>
/// The rows of a forward batch that belong to one session: <see cref="Rows"/> consecutive activation rows from
/// <see cref="FirstRow"/>, at positions <see cref="FirstPosition"/>... of that session's KV cache. Weight products
/// run over all rows of the batch at once; RoPE, cache writes and attention run per segment.
/// </summary>
public readonly record struct SessionRows(InferenceSession Session, int FirstRow, int Rows, int FirstPosition);
