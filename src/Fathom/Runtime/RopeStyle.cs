namespace Fathom.Runtime;

/// <summary>Which elements of a head RoPE rotates together, as llama.cpp picks per architecture.</summary>
public enum RopeStyle
{
    /// <summary>Adjacent pairs (x[2i], x[2i+1]): ggml's default mode, used for llama and deepseek2.</summary>
    Normal,

    /// <summary>Pairs half a rotation apart (x[i], x[i + d/2]): GPT-NeoX's layout, used for qwen2.</summary>
    NeoX,
}
