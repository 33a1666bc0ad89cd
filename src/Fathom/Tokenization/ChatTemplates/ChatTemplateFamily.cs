namespace Fathom.Tokenization;

/// <summary>The prompt layouts Fathom renders natively.</summary>
public enum ChatTemplateFamily
{
    /// <summary>The template text matched none of the known layouts.</summary>
    Unrecognized,

    /// <summary><c>&lt;｜User｜&gt;</c>/<c>&lt;｜Assistant｜&gt;</c> without reasoning handling (DeepSeek-V3).</summary>
    DeepSeekV3,

    /// <summary>The DeepSeek layout that strips earlier reasoning and may open <c>&lt;think&gt;</c> (R1 and its distills).</summary>
    DeepSeekR1,

    /// <summary><c>&lt;|im_start|&gt;role\n...&lt;|im_end|&gt;</c> as Qwen2/2.5 write it.</summary>
    ChatML,

    /// <summary>ChatML with Qwen3's reasoning handling (<c>&lt;think&gt;</c> blocks, <c>reasoning_content</c>).</summary>
    Qwen3,

    /// <summary><c>&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\n...&lt;|eot_id|&gt;</c> (Llama 3 and 3.1).</summary>
    Llama3,
}
