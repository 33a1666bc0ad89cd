using System.Globalization;
using Fathom.Models;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Fathom.Cli.Commands;

/// <summary>The human form of <c>fathom info</c>: Spectre.Console tables.</summary>
public static class InfoReport
{
    public static void Write(ModelSummary s, TextWriter output)
    {
        bool terminal = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected;
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
        });
        if (!terminal) console.Profile.Width = 160;

        console.Write(new Rule(Markup.Escape($"{s.Name ?? "(unnamed model)"} — {s.Architecture ?? "unknown architecture"}")).LeftJustified());
        console.Write(Files(s));
        console.Write(Hyperparameters(s));
        if (s.Tokenizer is { } t) console.Write(Tokenizer(t));
        console.Write(Tensors(s));
        console.Write(Sizes("Tensor groups", "Group", s.Groups));
        console.Write(Sizes("Tensor types", "Type", s.Types));
        console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Total: {s.TotalParameters:N0} parameters in {Bytes(s.TotalBytes)} ({s.BitsPerWeight:F2} bits per weight), {s.Tensors.Count} tensors, {s.MetadataCount} metadata keys."));
    }

    private static Table Files(ModelSummary s)
    {
        var table = NewTable($"GGUF v{s.Version}, {s.Files.Count} file(s)", "File", "Size", "Tensors", "Alignment", "Data offset");
        foreach (var f in s.Files) Row(table, f.Path, Bytes(f.Length), Num(f.TensorCount), Num(f.Alignment), Num(f.DataOffset));
        return table;
    }

    private static IRenderable Hyperparameters(ModelSummary s)
    {
        if (s.Hyperparameters is not { } hp) return new Text($"Hyperparameters: {s.HyperparametersError}\n");
        var table = NewTable("Hyperparameters", "Key", "Value");
        Row(table, "blocks", Num(hp.BlockCount));
        Row(table, "embedding length", Num(hp.EmbeddingLength));
        Row(table, "heads (kv heads)", $"{hp.HeadCount} ({hp.HeadCountKv})");
        Row(table, "key / value length", $"{hp.KeyLength} / {hp.ValueLength}");
        Row(table, "feed-forward length", Num(hp.FeedForwardLength));
        Row(table, "context length", Num(hp.ContextLength));
        Row(table, "vocabulary", Num(hp.VocabSize));
        Row(table, "RMS norm epsilon", hp.RmsNormEpsilon.ToString("G", CultureInfo.InvariantCulture));
        Row(table, "RoPE", string.Create(CultureInfo.InvariantCulture,
            $"{hp.Rope.DimensionCount} dims, base {hp.Rope.FreqBase}, scaling {hp.Rope.ScalingType} ×{hp.Rope.ScalingFactor} (original context {hp.Rope.OriginalContextLength}, YaRN log mult {hp.Rope.YarnLogMultiplier})"));
        if (hp.Mla is { } mla)
            Row(table, "MLA", $"q_lora {mla.QLoraRank}, kv_lora {mla.KvLoraRank}, qk {mla.QkNopeHeadDim}+{mla.QkRopeHeadDim}, v {mla.VHeadDim}, {(mla.AbsorbedLayout ? "absorbed (attn_k_b/attn_v_b)" : "attn_kv_b")}");
        if (hp.Moe is { } moe)
        {
            Row(table, "experts", string.Create(CultureInfo.InvariantCulture,
                $"{moe.ExpertCount} routed ({moe.ExpertUsedCount} per token) + {moe.SharedExpertCount} shared, width {moe.ExpertFeedForwardLength}"));
            Row(table, "routing", string.Create(CultureInfo.InvariantCulture,
                $"{moe.GatingFunction}, {(moe.WeightsNormalized ? "normalized" : "unnormalized")}, scale {moe.WeightsScale}, groups {moe.GroupUsedCount}/{moe.GroupCount}, {moe.LeadingDenseBlockCount} leading dense blocks"));
        }
        return table;
    }

    private static Table Tokenizer(TokenizerSummary t)
    {
        var table = NewTable("Tokenizer", "Key", "Value");
        Row(table, "model", t.Model ?? "-");
        Row(table, "pre-tokenizer", t.Pre ?? "-");
        Row(table, "vocabulary", Num(t.VocabSize));
        Row(table, "merges", Num(t.MergeCount));
        Row(table, "BOS / EOS", $"{t.BosTokenId?.ToString(CultureInfo.InvariantCulture) ?? "-"} / {t.EosTokenId?.ToString(CultureInfo.InvariantCulture) ?? "-"}");
        Row(table, "chat template", t.HasChatTemplate ? "yes" : "no");
        return table;
    }

    private static Table Tensors(ModelSummary s)
    {
        bool split = s.Files.Count > 1;
        var table = split
            ? NewTable("Tensors", "Name", "Shape", "Type", "Bytes", "Group", "File")
            : NewTable("Tensors", "Name", "Shape", "Type", "Bytes", "Group");
        foreach (TensorSummary t in s.Tensors)
        {
            string shape = string.Join(" × ", t.Shape.Select(d => d.ToString(CultureInfo.InvariantCulture)));
            if (split) Row(table, t.Name, shape, t.Type.ToString(), Bytes(t.Bytes), t.Group.ToString(), Num(t.FileIndex + 1));
            else Row(table, t.Name, shape, t.Type.ToString(), Bytes(t.Bytes), t.Group.ToString());
        }
        return table;
    }

    private static Table Sizes(string title, string label, IEnumerable<SizeSummary> sizes)
    {
        var table = NewTable(title, label, "Tensors", "Parameters", "Bytes", "Bits/weight");
        foreach (SizeSummary g in sizes)
            Row(table, g.Label, Num(g.TensorCount), Num(g.Parameters), Bytes(g.Bytes), g.BitsPerWeight.ToString("F2", CultureInfo.InvariantCulture));
        return table;
    }

    private static Table NewTable(string title, params string[] columns)
    {
        var table = new Table { Title = new TableTitle(Markup.Escape(title)), Border = TableBorder.Rounded };
        foreach (string c in columns) table.AddColumn(new TableColumn(new Text(c)));
        return table;
    }

    // Cells are Text, not markup: tensor names and metadata may contain '[' and ']'.
    private static void Row(Table table, params string[] cells) => table.AddRow(cells.Select(c => (IRenderable)new Text(c)).ToArray());

    private static string Num(long n) => n.ToString("N0", CultureInfo.InvariantCulture);

    private static string Bytes(long n)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = n;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1)
        {
            v /= 1024;
            u++;
        }
        return u == 0 ? $"{n} B" : string.Create(CultureInfo.InvariantCulture, $"{v:F2} {units[u]}");
    }
}
