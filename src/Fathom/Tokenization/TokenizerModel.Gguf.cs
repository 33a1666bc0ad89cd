using Fathom.Gguf;

namespace Fathom.Tokenization;

public sealed partial record TokenizerModel
{
    /// <summary>
    /// Reads the <c>tokenizer.ggml.*</c> keys of a GGUF file. Missing optional keys take llama.cpp's defaults
    /// (token types NORMAL, no special ids, BOS added only when the file says so); a wrong type or an id outside
    /// the vocabulary is an error naming the key.
    /// </summary>
    public static TokenizerModel FromGguf(GgufMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        string model = metadata.GetString(GgufKeys.Tokenizer.Model);
        string pre = metadata.TryGetString(GgufKeys.Tokenizer.Pre, out string? p) ? p : "default";
        IReadOnlyList<string> tokenList = metadata.GetStringArray(GgufKeys.Tokenizer.Tokens);
        string[] tokens = [.. tokenList];

        TokenType[] types = new TokenType[tokens.Length];
        if (metadata.TryGetInt32Array(GgufKeys.Tokenizer.TokenType, out int[]? rawTypes))
        {
            if (rawTypes.Length != tokens.Length)
                throw Error(metadata, GgufKeys.Tokenizer.TokenType, $"has {rawTypes.Length} entries for {tokens.Length} tokens");
            for (int i = 0; i < rawTypes.Length; i++)
                types[i] = rawTypes[i] is >= 0 and <= (int)TokenType.Byte
                    ? (TokenType)rawTypes[i]
                    : throw Error(metadata, GgufKeys.Tokenizer.TokenType, $"entry {i} is {rawTypes[i]}, not a llama.cpp token type");
        }
        else
        {
            Array.Fill(types, TokenType.Normal);
        }

        string[] merges = metadata.TryGetStringArray(GgufKeys.Tokenizer.Merges, out IReadOnlyList<string>? m) ? [.. m] : [];

        return new TokenizerModel(model, pre, tokens, types, merges)
        {
            BosId = Id(metadata, GgufKeys.Tokenizer.BosTokenId, tokens.Length),
            EosId = Id(metadata, GgufKeys.Tokenizer.EosTokenId, tokens.Length),
            EotId = Id(metadata, GgufKeys.Tokenizer.EotTokenId, tokens.Length),
            PadId = Id(metadata, GgufKeys.Tokenizer.PaddingTokenId, tokens.Length),
            UnkId = Id(metadata, GgufKeys.Tokenizer.UnknownTokenId, tokens.Length),
            // llama.cpp adds BOS for BPE vocabularies unless the file says otherwise.
            AddBos = !metadata.TryGetBool(GgufKeys.Tokenizer.AddBosToken, out bool addBos) || addBos,
            AddEos = metadata.TryGetBool(GgufKeys.Tokenizer.AddEosToken, out bool addEos) && addEos,
        };
    }

    /// <summary>Writes this tokenizer as the <c>tokenizer.ggml.*</c> keys llama.cpp reads (the inverse of <see cref="FromGguf"/>).</summary>
    public void WriteTo(GgufWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Set(GgufKeys.Tokenizer.Model, Model);
        writer.Set(GgufKeys.Tokenizer.Pre, Pre);
        writer.Set(GgufKeys.Tokenizer.Tokens, Tokens);
        writer.Set(GgufKeys.Tokenizer.TokenType, Array.ConvertAll(Types, t => (int)t));
        writer.Set(GgufKeys.Tokenizer.Merges, Merges);
        if (BosId is int bos) writer.Set(GgufKeys.Tokenizer.BosTokenId, (uint)bos);
        if (EosId is int eos) writer.Set(GgufKeys.Tokenizer.EosTokenId, (uint)eos);
        if (EotId is int eot) writer.Set(GgufKeys.Tokenizer.EotTokenId, (uint)eot);
        if (PadId is int pad) writer.Set(GgufKeys.Tokenizer.PaddingTokenId, (uint)pad);
        if (UnkId is int unk) writer.Set(GgufKeys.Tokenizer.UnknownTokenId, (uint)unk);
        writer.Set(GgufKeys.Tokenizer.AddBosToken, AddBos);
        writer.Set(GgufKeys.Tokenizer.AddEosToken, AddEos);
    }

    private static int? Id(GgufMetadata metadata, string key, int vocabSize)
    {
        if (!metadata.TryGetInt64(key, out long id)) return null;
        return id >= 0 && id < vocabSize ? (int)id : throw Error(metadata, key, $"is {id}, outside the vocabulary of {vocabSize} tokens");
    }

    private static GgufFormatException Error(GgufMetadata metadata, string key, string problem) =>
        new(metadata.FileName, key, metadata.OffsetOf(key), problem);
}
