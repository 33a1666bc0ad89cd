using Fathom.Gguf;
using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>
/// The qwen2 architecture (and the DeepSeek-R1 Qwen distills): llama's block with biases on the query, key and
/// value projections, and NeoX-style RoPE (rotating element pairs half a head apart).
/// </summary>
public sealed class Qwen2(GgufFile file, ModelHyperparameters config, IComputeBackend backend, bool ownsFile = false)
    : Llama(file, config, backend, ownsFile, RopeStyle.NeoX, withBiases: true);
