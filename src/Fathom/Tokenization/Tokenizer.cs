using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text;

namespace Fathom.Tokenization;

/// <summary>
/// Byte-level BPE tokenizer (llama.cpp <c>tokenizer.ggml.model = "gpt2"</c>) with the DeepSeek, Qwen and Llama-3
/// pre-tokenizers. Encodes like Hugging Face tokenizers. Safe for concurrent use.
/// </summary>
public sealed class Tokenizer
{
    private const int CacheMaxPieceChars = 64;
    private const int CacheCapacity = 1 << 17;

    // Texts llama.cpp treats as end of generation besides EOS/EOT.
    private static readonly string[] s_endOfGenerationTexts =
        ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>"];

    [ThreadStatic] private static List<(int Start, int Length)>? t_pieces;

    private readonly TokenizerModel _model;
    private readonly TokenType[] _types;
    private readonly byte[] _bytes;       // all token bytes, concatenated
    private readonly int[] _byteOffsets;  // token i is _bytes[_byteOffsets[i].._byteOffsets[i + 1]]
    private readonly Dictionary<string, int> _idsByText;
    private readonly BpeMerger _merger;
    private readonly PreTokenizer _preTokenizer;
    private readonly AddedTokenMatcher _allAddedTokens;     // CONTROL and USER_DEFINED
    private readonly AddedTokenMatcher _userDefinedTokens;  // USER_DEFINED only
    private readonly HashSet<int> _endOfGeneration;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheLookup;
    private int _cacheAdds;

    private Tokenizer(TokenizerModel model)
    {
        _model = model;
        int count = model.Tokens.Length;
        _types = model.Types;

        _idsByText = new Dictionary<string, int>(count, StringComparer.Ordinal);
        for (int id = 0; id < count; id++) _idsByText.TryAdd(model.Tokens[id], id);

        _byteOffsets = new int[count + 1];
        var bytes = new ArrayBufferWriter<byte>(count * 8);
        for (int id = 0; id < count; id++)
        {
            string text = model.Tokens[id];
            if (IsAddedType(_types[id]))
            {
                int n = Encoding.UTF8.GetBytes(text, bytes.GetSpan(Encoding.UTF8.GetMaxByteCount(text.Length)));
                bytes.Advance(n);
            }
            else
            {
                ByteLevelAlphabet.Decode(text, bytes);
            }
            if (bytes.WrittenCount > int.MaxValue - 64) throw new InvalidDataException("Token texts too large.");
            _byteOffsets[id + 1] = bytes.WrittenCount;
        }
        _bytes = bytes.WrittenSpan.ToArray();

        var byteTokens = new int[256];
        for (int b = 0; b < 256; b++)
        {
            if (!_idsByText.TryGetValue(ByteLevelAlphabet.ToChar((byte)b).ToString(), out byteTokens[b]))
                throw new InvalidDataException($"Vocabulary has no token for byte 0x{b:X2}.");
        }

        var merges = new List<(int, int, int)>(model.Merges.Length);
        var lookup = _idsByText.GetAlternateLookup<ReadOnlySpan<char>>();
        char[] joined = new char[256];
        for (int rank = 0; rank < model.Merges.Length; rank++)
        {
            string merge = model.Merges[rank] ?? throw new InvalidDataException($"Merge {rank} is null.");
            // As llama.cpp: split at the first space after the first char.
            int space = merge.Length > 1 ? merge.IndexOf(' ', 1) : -1;
            if (space < 0) throw new InvalidDataException($"Merge {rank} '{merge}' has no separating space.");
            ReadOnlySpan<char> left = merge.AsSpan(0, space), right = merge.AsSpan(space + 1);
            if (joined.Length < merge.Length) joined = new char[merge.Length];
            left.CopyTo(joined);
            right.CopyTo(joined.AsSpan(space));
            // Merges whose parts or result are not tokens can never apply; they keep their rank slot.
            if (lookup.TryGetValue(left, out int l) && lookup.TryGetValue(right, out int r)
                && lookup.TryGetValue(joined.AsSpan(0, merge.Length - 1), out int result))
                merges.Add((l, r, result));
            else
                merges.Add((-1, -1, -1));
        }
        _merger = new BpeMerger(merges, byteTokens);
        _preTokenizer = PreTokenizer.ForPreType(model.Pre);

        var added = new List<(string, int)>();
        var userDefined = new List<(string, int)>();
        for (int id = 0; id < count; id++)
        {
            if (_types[id] == TokenType.Control) added.Add((model.Tokens[id], id));
            else if (_types[id] == TokenType.UserDefined)
            {
                added.Add((model.Tokens[id], id));
                userDefined.Add((model.Tokens[id], id));
            }
        }
        _allAddedTokens = new AddedTokenMatcher(added);
        _userDefinedTokens = new AddedTokenMatcher(userDefined);

        _endOfGeneration = [];
        if (model.EosId is int eos) _endOfGeneration.Add(eos);
        if (model.EotId is int eot) _endOfGeneration.Add(eot);
        foreach (string text in s_endOfGenerationTexts)
        {
            if (_idsByText.TryGetValue(text, out int id) && IsAddedType(_types[id])) _endOfGeneration.Add(id);
        }

        _cacheLookup = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    /// <summary>Builds a tokenizer, validating the model (untrusted GGUF data).</summary>
    public static Tokenizer Create(TokenizerModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.Model != "gpt2")
            throw new NotSupportedException($"Tokenizer model '{model.Model}' is not supported (only 'gpt2' byte-level BPE).");
        if (model.Tokens is null || model.Types is null || model.Merges is null)
            throw new InvalidDataException("Tokenizer model lacks tokens, types or merges.");
        if (model.Types.Length != model.Tokens.Length)
            throw new InvalidDataException($"Token type count {model.Types.Length} differs from token count {model.Tokens.Length}.");
        foreach (var (name, id) in new[] { ("BOS", model.BosId), ("EOS", model.EosId), ("EOT", model.EotId), ("PAD", model.PadId), ("UNK", model.UnkId) })
        {
            if (id is int v && (uint)v >= (uint)model.Tokens.Length)
                throw new InvalidDataException($"{name} token id {v} is outside the vocabulary of {model.Tokens.Length}.");
        }
        for (int i = 0; i < model.Tokens.Length; i++)
        {
            if (model.Tokens[i] is null) throw new InvalidDataException($"Token {i} is null.");
        }
        return new Tokenizer(model);
    }

    public TokenizerModel Model => _model;
    internal BpeMerger Merger => _merger;
    internal PreTokenizer PreTokenizer => _preTokenizer;
    public int VocabSize => _types.Length;
    public int? BosId => _model.BosId;
    public int? EosId => _model.EosId;
    public int? EotId => _model.EotId;

    /// <summary>True for EOS, EOT and the other tokens that end a turn (llama.cpp's end-of-generation set).</summary>
    public bool IsEndOfGeneration(int id) => _endOfGeneration.Contains(id);

    /// <summary>The id of a token given its vocabulary text (byte-level for normal tokens), or null.</summary>
    public int? TryGetId(string piece) => _idsByText.TryGetValue(piece, out int id) ? id : null;

    public TokenType GetTokenType(int id) => _types[CheckId(id)];

    /// <summary>Encodes text to token ids.</summary>
    /// <param name="addSpecial">Add BOS/EOS as the model asks (<see cref="TokenizerModel.AddBos"/>, <see cref="TokenizerModel.AddEos"/>).</param>
    /// <param name="parseSpecial">Match control tokens written in the text; user-defined tokens are always matched (as llama.cpp and HF do).</param>
    public IReadOnlyList<int> Encode(string text, bool addSpecial = true, bool parseSpecial = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var output = new List<int>(text.Length / 3 + 4);
        Encode(text.AsSpan(), output, addSpecial, parseSpecial);
        return output;
    }

    /// <summary>Encodes text, appending token ids to <paramref name="output"/>.</summary>
    public void Encode(ReadOnlySpan<char> text, List<int> output, bool addSpecial = true, bool parseSpecial = true)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (addSpecial && _model.AddBos && _model.BosId is int bos) output.Add(bos);

        var matcher = parseSpecial ? _allAddedTokens : _userDefinedTokens;
        int start = 0;
        while (start < text.Length)
        {
            if (matcher.IsEmpty || !matcher.FindNext(text, start, out int position, out int length, out int id))
            {
                EncodeSegment(text[start..], output);
                break;
            }
            if (position > start) EncodeSegment(text[start..position], output);
            output.Add(id);
            start = position + length;
        }

        if (addSpecial && _model.AddEos && _model.EosId is int eos) output.Add(eos);
    }

    /// <summary>Encodes text without added tokens: normalization, pre-tokenization, BPE per piece.</summary>
    private void EncodeSegment(ReadOnlySpan<char> segment, List<int> output)
    {
        string? normalized = null;
        if (_model.NormalizeNfc && !Nfc.IsQuickNormalized(segment))
        {
            normalized = Nfc.Normalize(segment);
            segment = normalized;
        }
        var pieces = t_pieces ??= new List<(int Start, int Length)>();
        int first = pieces.Count; // not reentrant, but stay correct if it ever is
        _preTokenizer.Split(segment, pieces);
        for (int i = first; i < pieces.Count; i++)
        {
            var (pieceStart, pieceLength) = pieces[i];
            EncodePiece(segment.Slice(pieceStart, pieceLength), output);
        }
        pieces.RemoveRange(first, pieces.Count - first);
    }

    /// <summary>Benchmarks switch the per-piece cache off to measure the BPE itself.</summary>
    internal bool CacheEnabled { get; set; } = true;

    [SkipLocalsInit] // the UTF-8 buffer is written before it is read
    private void EncodePiece(ReadOnlySpan<char> piece, List<int> output)
    {
        bool cacheable = CacheEnabled && piece.Length <= CacheMaxPieceChars;
        if (cacheable && _cacheLookup.TryGetValue(piece, out var cached))
        {
            output.AddRange(cached);
            return;
        }

        int start = output.Count;
        int maxBytes = Encoding.UTF8.GetMaxByteCount(piece.Length);
        byte[]? rented = null;
        Span<byte> utf8 = maxBytes <= 512 ? stackalloc byte[512] : (rented = ArrayPool<byte>.Shared.Rent(maxBytes));
        try
        {
            int n = Encoding.UTF8.GetBytes(piece, utf8); // lone surrogates become U+FFFD
            _merger.Encode(utf8[..n], output);
        }
        finally
        {
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }

        if (cacheable)
        {
            // Bounded: start over when full (ConcurrentDictionary.Count takes every lock, so count adds ourselves).
            if (Interlocked.Increment(ref _cacheAdds) > CacheCapacity)
            {
                _cache.Clear();
                Interlocked.Exchange(ref _cacheAdds, 0);
            }
            _cache.TryAdd(piece.ToString(), output.GetRange(start, output.Count - start).ToArray());
        }
    }

    /// <summary>The bytes a token stands for (UTF-8 text for control and user-defined tokens).</summary>
    public byte[] TokenBytes(int id) => TokenByteSpan(id).ToArray();

    internal ReadOnlySpan<byte> TokenByteSpan(int id)
    {
        CheckId(id);
        return _bytes.AsSpan(_byteOffsets[id], _byteOffsets[id + 1] - _byteOffsets[id]);
    }

    /// <summary>A token's text; bytes that are not complete UTF-8 become U+FFFD.</summary>
    public string TokenToPiece(int id) => Encoding.UTF8.GetString(TokenByteSpan(id));

    internal bool IsSkippedWhenSkippingSpecial(int id) => _types[id] == TokenType.Control;

    /// <summary>Decodes token ids to text; invalid UTF-8 becomes U+FFFD.</summary>
    /// <param name="skipSpecial">Leave out control tokens (BOS, EOS, chat markers).</param>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecial = false)
    {
        var buffer = new ArrayBufferWriter<byte>(ids.Length * 4 + 16);
        foreach (int id in ids)
        {
            CheckId(id);
            if (skipSpecial && IsSkippedWhenSkippingSpecial(id)) continue;
            buffer.Write(TokenByteSpan(id));
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private int CheckId(int id)
    {
        if ((uint)id >= (uint)_types.Length)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"Token id outside the vocabulary of {_types.Length}.");
        return id;
    }

    private static bool IsAddedType(TokenType type) => type is TokenType.Control or TokenType.UserDefined;
}
