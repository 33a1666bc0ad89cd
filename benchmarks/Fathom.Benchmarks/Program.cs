using BenchmarkDotNet.Running;
using Fathom.Benchmarks;
using Fathom.Quants;

// Run with: dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --filter '*ClassName*'
// Fathom against llama.cpp on full-size shapes: -- --sidebyside [-t 2]
// Where a prompt's time goes, per backend operation: -- --profile-pp [preset] [-t 2]
// The load-tolerant in-cache tile comparison (new kernel vs the four-token tile): -- --interleaved-tile [Q4_K,...] [columns]
// The load-tolerant in-cache dot comparison: -- --interleaved-dot [Q4_K,IQ1_S,...]
if (args.Length > 0 && args[0] == "--sidebyside") return LlamaCppSideBySide.Run(args[1..]);
if (args.Length > 0 && args[0] == "--interleaved-tile")
{
    GgmlType[] types = args.Length > 1
        ? [.. args[1].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Enum.Parse<GgmlType>)]
        : [GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q8_0, GgmlType.Q5_0, GgmlType.IQ4_NL];
    int columns = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 1536;
    InterleavedTileComparison.Run(types, columns, Console.Out);
    return 0;
}
if (args.Length > 0 && args[0] == "--profile-pp") return PromptProfile.Run(args[1..]);
// Where one decode step's time goes, per operation and weight: -- --decode-profile [-t 2] [-n 32] [--models a,b]
if (args.Length > 0 && args[0] == "--decode-profile") return DecodeProfile.Run(args[1..]);
if (args.Length > 0 && args[0] == "--interleaved-dot")
{
    GgmlType[] types = args.Length > 1
        ? [.. args[1].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Enum.Parse<GgmlType>)]
        : [GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q8_0, GgmlType.Q2_K, GgmlType.IQ1_S, GgmlType.IQ1_M, GgmlType.IQ2_XXS, GgmlType.IQ4_XS];
    InterleavedDotComparison.Run(types, Console.Out);
    return 0;
}
BenchmarkSwitcher.FromAssembly(typeof(LlamaCppSideBySide).Assembly).Run(args);
return 0;
