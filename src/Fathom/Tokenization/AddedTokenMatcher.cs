namespace Fathom.Tokenization;

/// <summary>
/// Finds added tokens (special and user-defined) in text: at each position the longest token that starts
/// there wins, scanning left to right (Hugging Face's added-token splitter semantics).
/// </summary>
internal sealed class AddedTokenMatcher
{
    private sealed class Node
    {
        public Dictionary<char, Node>? Children;
        public int TokenId = -1;
    }

    private readonly Node _root = new();
    private readonly bool[] _firstChar = new bool[char.MaxValue + 1];

    public AddedTokenMatcher(IEnumerable<(string Text, int Id)> tokens)
    {
        foreach (var (text, id) in tokens)
        {
            if (text.Length == 0) continue;
            var node = _root;
            foreach (char c in text)
            {
                node.Children ??= new Dictionary<char, Node>();
                if (!node.Children.TryGetValue(c, out var child))
                {
                    child = new Node();
                    node.Children.Add(c, child);
                }
                node = child;
            }
            // The first token listed for a text keeps it (lowest id when listed in id order).
            if (node.TokenId < 0) node.TokenId = id;
            _firstChar[text[0]] = true;
        }
    }

    public bool IsEmpty => _root.Children is null;

    /// <summary>
    /// Finds the first added token at or after <paramref name="start"/>.
    /// Returns false when there is none; otherwise its position, length in chars and id.
    /// </summary>
    public bool FindNext(ReadOnlySpan<char> text, int start, out int position, out int length, out int tokenId)
    {
        for (int i = start; i < text.Length; i++)
        {
            if (!_firstChar[text[i]]) continue;
            var node = _root;
            int bestLength = 0, bestId = -1;
            for (int j = i; j < text.Length; j++)
            {
                if (node.Children is null || !node.Children.TryGetValue(text[j], out var child)) break;
                node = child;
                if (node.TokenId >= 0)
                {
                    bestLength = j - i + 1;
                    bestId = node.TokenId;
                }
            }
            if (bestId >= 0)
            {
                position = i;
                length = bestLength;
                tokenId = bestId;
                return true;
            }
        }
        position = length = 0;
        tokenId = -1;
        return false;
    }
}
