namespace Fathom.Tokenization;

/// <summary>Token kinds with llama.cpp's numeric ids (GGUF <c>tokenizer.ggml.token_type</c>).</summary>
public enum TokenType
{
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    /// <summary>Special token (BOS, EOS, chat markers); matched in text only when special parsing is on.</summary>
    Control = 3,
    /// <summary>Added token that is always matched in text and never split.</summary>
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}
