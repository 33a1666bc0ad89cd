using System.Globalization;
using Fathom.Evaluation;
using Fathom.Models;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Fathom.Cli.Commands;

/// <summary>The human form of <c>fathom info</c>: Spectre.Console tables.</summary>
public static class InfoReport
{
    public static void Write(ModelSummary s, TextWriter output)
    {
        IAnsiConsole console = ReportTables.Console(output);

        console.Write(new Rule(Markup.Escape($"{s.Name ?? "(unnamed model)"} — {s.Architecture ?? "unknown architecture"}")).LeftJustified());
        console.Write(Files(s));
        console.Write(Hyperparameters(s));
        if (s.Tokenizer is { } t) console.Write(Tokenizer(t));
        console.Write(Tensors(s));
        console.Write(Sizes("Tensor groups", "Group", s.Groups));
        console.Write(Sizes("Tensor types", "Type", s.Types));
        console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Total: {s.TotalParameters:N0} parameters in {ByteSizes.Format(s.TotalBytes)} ({s.BitsPerWeight:F2} bits per weight), {s.Tensors.Count} tensors, {s.MetadataCount} metadata keys."));
    }

    private static Table Files(ModelSummary s)
    {
        var table = ReportTables.New($"GGUF v{s.Version}, {s.Files.Count} file(s)", "File", "Size", "Tensors", "Alignment", "Data offset");
        foreach (var f in s.Files) ReportTables.Row(table, f.Path, ByteSizes.Format(f.Length), Num(f.TensorCount), Num(f.Alignment), Num(f.DataOffset));
        return table;
    }

    private static IRenderable Hyperparameters(ModelSummary s)
    {
        if (s.Hyperparameters is not { } hp) return new Text($"Hyperparameters: {s.HyperparametersError}\n");
        var table = ReportTables.New("Hyperparameters", "Key", "Value");
        ReportTables.Row(table, "blocks", Num(hp.BlockCount));
        ReportTables.Row(table, "embedding length", Num(hp.EmbeddingLength));
        ReportTables.Row(table, "heads (kv heads)", $"{hp.HeadCount} ({hp.HeadCountKv})");
        ReportTables.Row(table, "key / value length", $"{hp.KeyLength} / {hp.ValueLength}");
        ReportTables.Row(table, "feed-forward length", Num(hp.FeedForwardLength));
        ReportTables.Row(table, "context length", Num(hp.ContextLength));
        ReportTables.Row(table, "vocabulary", Num(hp.VocabSize));
        ReportTables.Row(table, "RMS norm epsilon", hp.RmsNormEpsilon.ToString("G", CultureInfo.InvariantCulture));
        ReportTables.Row(table, "RoPE", string.Create(CultureInfo.InvariantCulture,
            $"{hp.Rope.DimensionCount} dims, base {hp.Rope.FreqBase}, scaling {hp.Rope.ScalingType} ×{hp.Rope.ScalingFactor} (original context {hp.Rope.OriginalContextLength}, YaRN log mult {hp.Rope.YarnLogMultiplier})"));
        if (hp.Mla is { } mla)
            ReportTables.Row(table, "MLA", $"q_lora {mla.QLoraRank}, kv_lora {mla.KvLoraRank}, qk {mla.QkNopeHeadDim}+{mla.QkRopeHeadDim}, v {mla.VHeadDim}, {(mla.AbsorbedLayout ? "absorbed (attn_k_b/attn_v_b)" : "attn_kv_b")}");
        if (hp.Moe is { } moe)
        {
            ReportTables.Row(table, "experts", string.Create(CultureInfo.InvariantCulture,
                $"{moe.ExpertCount} routed ({moe.ExpertUsedCount} per token) + {moe.SharedExpertCount} shared, width {moe.ExpertFeedForwardLength}"));
            ReportTables.Row(table, "routing", string.Create(CultureInfo.InvariantCulture,
                $"{moe.GatingFunction}, {(moe.WeightsNormalized ? "normalized" : "unnormalized")}, scale {moe.WeightsScale}, groups {moe.GroupUsedCount}/{moe.GroupCount}, {moe.LeadingDenseBlockCount} leading dense blocks"));
        }
        return table;
    }

    private static Table Tokenizer(TokenizerSummary t)
    {
        var table = ReportTables.New("Tokenizer", "Key", "Value");
        ReportTables.Row(table, "model", t.Model ?? "-");
        ReportTables.Row(table, "pre-tokenizer", t.Pre ?? "-");
        ReportTables.Row(table, "vocabulary", Num(t.VocabSize));
        ReportTables.Row(table, "merges", Num(t.MergeCount));
        ReportTables.Row(table, "BOS / EOS", $"{t.BosTokenId?.ToString(CultureInfo.InvariantCulture) ?? "-"} / {t.EosTokenId?.ToString(CultureInfo.InvariantCulture) ?? "-"}");
        ReportTables.Row(table, "chat template", t.ChatTemplateFamily is { } family ? $"yes ({family})" : "no");
        return table;
    }

    private static Table Tensors(ModelSummary s)
    {
        bool split = s.Files.Count > 1;
        var table = split
            ? ReportTables.New("Tensors", "Name", "Shape", "Type", "Bytes", "Group", "File")
            : ReportTables.New("Tensors", "Name", "Shape", "Type", "Bytes", "Group");
        foreach (TensorSummary t in s.Tensors)
        {
            string shape = string.Join(" × ", t.Shape.Select(d => d.ToString(CultureInfo.InvariantCulture)));
            if (split) ReportTables.Row(table, t.Name, shape, t.Type.ToString(), ByteSizes.Format(t.Bytes), t.Group.ToString(), Num(t.FileIndex + 1));
            else ReportTables.Row(table, t.Name, shape, t.Type.ToString(), ByteSizes.Format(t.Bytes), t.Group.ToString());
        }
        return table;
    }

    private static Table Sizes(string title, string label, IEnumerable<SizeSummary> sizes)
    {
        var table = ReportTables.New(title, label, "Tensors", "Parameters", "Bytes", "Bits/weight");
        foreach (SizeSummary g in sizes)
            ReportTables.Row(table, g.Label, Num(g.TensorCount), Num(g.Parameters), ByteSizes.Format(g.Bytes), g.BitsPerWeight.ToString("F2", CultureInfo.InvariantCulture));
        return table;
    }

    private static string Num(long n) => n.ToString("N0", CultureInfo.InvariantCulture);
}
