using Fathom.Tokenization;

namespace Fathom.Tests.Tokenization;

/// <summary>
/// Every corpus string encodes to the ids Hugging Face's tokenizers (JS port) produce for the real DeepSeek-V3
/// and Qwen tokenizers; see tests/reference/tokenizer.
/// </summary>
public class TokenizerReferenceTests
{
    public static TheoryData<string> Names => new() { TokenizerTestData.DeepSeekV3, TokenizerTestData.Qwen };

    [Theory]
    [MemberData(nameof(Names))]
    public void EveryCorpusStringEncodesToTheReferenceIds(string name)
    {
        var tokenizer = TokenizerTestData.Get(name);
        var cases = TokenizerTestData.Cases;
        Assert.True(cases.Count >= 5000, $"corpus has only {cases.Count} rows");
        var failures = new List<string>();
        var ids = new List<int>();
        foreach (var c in cases)
        {
            ids.Clear();
            tokenizer.Encode(c.Text, ids, addSpecial: c.AddSpecial, parseSpecial: true);
            int[] expected = c.Expected(name);
            if (ids.SequenceEqual(expected)) continue;
            int at = 0;
            while (at < ids.Count && at < expected.Length && ids[at] == expected[at]) at++;
            failures.Add($"addSpecial={c.AddSpecial} \"{TokenizerTestData.Escape(c.Text)}\": first difference at token {at}: " +
                $"expected [{string.Join(",", expected.Skip(at).Take(6))}] got [{string.Join(",", ids.Skip(at).Take(6))}]");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {cases.Count} differ:\n" + string.Join("\n", failures.Take(25)));
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void StringOverloadMatchesListOverload(string name)
    {
        var tokenizer = TokenizerTestData.Get(name);
        foreach (var c in TokenizerTestData.Cases.Where(c => c.AddSpecial).Take(200))
        {
            var list = new List<int> { -7 };
            tokenizer.Encode(c.Text, list, addSpecial: true);
            Assert.Equal(list.Skip(1), tokenizer.Encode(c.Text, addSpecial: true));
        }
    }
}
