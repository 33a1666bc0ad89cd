namespace Fathom.Tokenization;

/// <summary>
/// A BPE tokenizer as GGUF stores it (<c>tokenizer.ggml.*</c>): tokens indexed by id, their types, the merge
/// list in rank order and the special token ids.
/// </summary>
/// <param name="Model"><c>tokenizer.ggml.model</c>; only "gpt2" (byte-level BPE) is supported.</param>
/// <param name="Pre"><c>tokenizer.ggml.pre</c>: deepseek-v3, deepseek-llm, qwen2, deepseek-r1-qwen or llama-bpe.</param>
/// <param name="Tokens">Token texts by id: byte-level-encoded for normal tokens, plain text for control and user-defined tokens.</param>
/// <param name="Types">Token type by id.</param>
/// <param name="Merges">Merges in rank order, each "left right" in byte-level encoding.</param>
public sealed partial record TokenizerModel(string Model, string Pre, string[] Tokens, TokenType[] Types, string[] Merges)
{
    public int? BosId { get; init; }
    public int? EosId { get; init; }
    /// <summary>End of turn (e.g. <c>&lt;|im_end|&gt;</c>); llama.cpp's <c>tokenizer.ggml.eot_token_id</c>.</summary>
    public int? EotId { get; init; }
    public int? PadId { get; init; }
    public int? UnkId { get; init; }
    public bool AddBos { get; init; }
    public bool AddEos { get; init; }

    /// <summary>
    /// Apply Unicode NFC to text before pre-tokenization, as the Hugging Face Qwen tokenizers do. Defaults to
    /// true for the Qwen pre-tokenizers; GGUF has no key for it (llama.cpp itself never normalizes).
    /// </summary>
    public bool NormalizeNfc { get; init; } = Pre is "qwen2" or "deepseek-r1-qwen";
}
