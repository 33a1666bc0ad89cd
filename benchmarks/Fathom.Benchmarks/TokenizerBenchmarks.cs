using System.IO.Compression;
using System.Text;
using System.Text.Json;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Fathom.Tokenization;

namespace Fathom.Benchmarks;

/// <summary>
/// Encoding throughput over the tokenizer test corpus (6,000 varied strings, ~0.68 MB of UTF-8), with the
/// per-piece cache warm (steady state of a server) and off (the BPE itself).
/// Run: dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --filter '*TokenizerBenchmarks*' --job short
/// </summary>
[Config(typeof(ThroughputConfig))]
[MemoryDiagnoser]
public class TokenizerBenchmarks
{
    private Tokenizer _tokenizer = null!;
    private string[] _corpus = [];
    private readonly List<int> _ids = new(1 << 16);

    [Params("deepseek-v3", "qwen")]
    public string Name { get; set; } = "";

    [Params(true, false)]
    public bool Cache { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        string dir = Path.Combine(RepositoryRoot(), "..", "shared", "data", "tokenizers", Name);
        _tokenizer = Tokenizer.Create(TokenizerModel.FromHuggingFace(Path.Combine(dir, "tokenizer.json"), Path.Combine(dir, "tokenizer_config.json")));
        _tokenizer.CacheEnabled = Cache;
        _corpus = Corpus.Value;
        Encode(); // warms the cache when it is on
    }

    [Benchmark]
    public int Encode()
    {
        int count = 0;
        foreach (string text in _corpus)
        {
            _ids.Clear();
            _tokenizer.Encode(text, _ids, addSpecial: false);
            count += _ids.Count;
        }
        return count;
    }

    internal static readonly Lazy<string[]> Corpus = new(() =>
    {
        string path = Path.Combine(RepositoryRoot(), "tests", "Fathom.Tests", "Tokenization", "Data", "tokenizer-reference.jsonl.gz");
        using var reader = new StreamReader(new GZipStream(File.OpenRead(path), CompressionMode.Decompress));
        var texts = new List<string>();
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0) continue;
            using var doc = JsonDocument.Parse(line);
            if (!doc.RootElement.GetProperty("addSpecial").GetBoolean()) texts.Add(doc.RootElement.GetProperty("text").GetString()!);
        }
        return texts.ToArray();
    });

    internal static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Fathom.slnx"))) dir = dir.Parent;
        return dir?.FullName ?? throw new DirectoryNotFoundException("Fathom.slnx not found above " + AppContext.BaseDirectory);
    }

    private sealed class ThroughputConfig : ManualConfig
    {
        public ThroughputConfig() => AddColumn(new MegabytesPerSecondColumn());
    }

    /// <summary>UTF-8 megabytes (10^6 bytes) of corpus encoded per second, from the mean time.</summary>
    private sealed class MegabytesPerSecondColumn : IColumn
    {
        public string Id => "MBps";
        public string ColumnName => "MB/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "UTF-8 megabytes of corpus encoded per second (mean)";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var stats = summary[benchmarkCase]?.ResultStatistics;
            if (stats is null) return "NA";
            long bytes = Corpus.Value.Sum(t => (long)Encoding.UTF8.GetByteCount(t));
            return (bytes / (stats.Mean / 1e9) / 1e6).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
        }
    }
}
