namespace Fathom.Models;

/// <summary>The model families Fathom runs, by their GGUF <c>general.architecture</c> names.</summary>
public enum ModelArchitecture
{
    /// <summary><c>llama</c>: Llama and the DeepSeek-R1-Distill-Llama models.</summary>
    Llama,

    /// <summary><c>qwen2</c>: Qwen2/2.5 and the DeepSeek-R1-Distill-Qwen models.</summary>
    Qwen2,

    /// <summary><c>deepseek2</c>: DeepSeek-V2/V3/R1 (MLA attention, mixture of experts).</summary>
    DeepSeek2,
}

public static class ModelArchitectures
{
    public static string GgufName(this ModelArchitecture architecture) => architecture switch
    {
        ModelArchitecture.Llama => "llama",
        ModelArchitecture.Qwen2 => "qwen2",
        ModelArchitecture.DeepSeek2 => "deepseek2",
        _ => throw new ArgumentOutOfRangeException(nameof(architecture)),
    };

    public static bool TryParse(string name, out ModelArchitecture architecture)
    {
        switch (name)
        {
            case "llama": architecture = ModelArchitecture.Llama; return true;
            case "qwen2": architecture = ModelArchitecture.Qwen2; return true;
            case "deepseek2": architecture = ModelArchitecture.DeepSeek2; return true;
            default: architecture = default; return false;
        }
    }
}
