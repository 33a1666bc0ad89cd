namespace Fathom.Models.Synthesis;

/// <summary>
/// A valid byte-level BPE vocabulary of any size for synthetic models: the 256 byte tokens, merges that build
/// longer tokens out of shorter ones, and the special tokens of the DeepSeek chat format. llama.cpp loads it as
/// a <c>gpt2</c> tokenizer.
/// </summary>
public sealed class SyntheticVocabulary
{
    public static readonly string[] DeepSeekSpecialTokens =
    [
        "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>",
    ];

    public required string[] Tokens { get; init; }
    /// <summary>llama.cpp token types: 1 normal, 3 control, 4 user-defined.</summary>
    public required int[] TokenTypes { get; init; }
    public required string[] Merges { get; init; }
    public int BosId { get; init; }
    public int EosId { get; init; }

    /// <summary>Builds <paramref name="size"/> tokens: bytes, then merged tokens, then the special tokens last.</summary>
    public static SyntheticVocabulary Build(int size, int seed = 7)
    {
        string[] specials = DeepSeekSpecialTokens;
        if (size < 256 + specials.Length) throw new ArgumentOutOfRangeException(nameof(size), $"vocabulary needs at least {256 + specials.Length} tokens");
        char[] byteChars = [.. Enumerable.Range(0, 256).Select(b => Tokenization.ByteLevelAlphabet.ToChar((byte)b))];
        var tokens = new List<string>(size);
        var known = new HashSet<string>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) { tokens.Add(byteChars[b].ToString()); known.Add(tokens[^1]); }

        // Merge pairs of printable tokens into longer ones; each merge's result is a new token, so the merge
        // list is a valid BPE ranking. Lowercase letters and space first, so real text compresses a little.
        var merges = new List<string>();
        string letters = "etaoinshrdlucmfwypvbgkjqxz";
        string space = byteChars[' '].ToString();
        var rng = new Random(seed);
        var pool = new List<string>();
        var shortPool = new List<string>(); // tokens of at most half the longest length: any two merge within it
        foreach (char c in letters) { pool.Add(c.ToString()); shortPool.Add(pool[^1]); }
        int target = size - specials.Length;
        bool TryMerge(string left, string right)
        {
            string merged = left + right;
            if (tokens.Count >= target || merged.Length > 12 || !known.Add(merged)) return false;
            tokens.Add(merged);
            merges.Add(left + " " + right);
            pool.Add(merged);
            if (merged.Length <= 6) shortPool.Add(merged);
            return true;
        }
        foreach (char c in letters) TryMerge(space, c.ToString());
        foreach (char a in letters)
            foreach (char b in letters)
                TryMerge(a.ToString(), b.ToString());
        // Random pairs of the pool; once long tokens make most pairs too long (large vocabularies), pairs of short tokens.
        int misses = 0;
        while (tokens.Count < target)
        {
            List<string> from = misses < 64 ? pool : shortPool;
            if (TryMerge(from[rng.Next(from.Count)], from[rng.Next(from.Count)])) { if (misses < 64) misses = 0; }
            else misses++;
        }

        int firstSpecial = tokens.Count;
        tokens.AddRange(specials);
        var types = new int[tokens.Count];
        Array.Fill(types, 1);
        for (int i = firstSpecial; i < tokens.Count; i++) types[i] = i < firstSpecial + 2 ? 3 : 4;
        return new SyntheticVocabulary
        {
            Tokens = [.. tokens], TokenTypes = types, Merges = [.. merges], BosId = firstSpecial, EosId = firstSpecial + 1,
        };
    }
}
