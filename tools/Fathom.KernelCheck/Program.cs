using System.Globalization;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.KernelCheck;
using Fathom.Quants;

// Fathom.KernelCheck [--types Q4_K,Q8_0] [--seconds 0.25] [--no-speed] [--digests]
// For every weight type and every kernel path this CPU supports: the path against the scalar reference (same data
// kinds and tolerance as the conformance tests), then single-thread dot throughput. Exit code 1 on any failure.
// --digests prints only the digests of the operations that must not depend on the instruction set (IsaDigests).
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
string[] types = ArgValue(args, "--types")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [];
double seconds = double.Parse(ArgValue(args, "--seconds") ?? "0.25", CultureInfo.InvariantCulture);
bool speed = !args.Contains("--no-speed");

Console.WriteLine($"{RuntimeInformation.FrameworkDescription}, {RuntimeInformation.OSDescription}, {RuntimeInformation.ProcessArchitecture}");
Console.WriteLine($"CPU: AVX2 {Avx2.IsSupported}, FMA {Fma.IsSupported}, AVX-VNNI {AvxVnni.IsSupported}, AVX-512F {Avx512F.IsSupported}, " +
    $"AVX-512BW {Avx512BW.IsSupported}, AVX-512VBMI {Avx512Vbmi.IsSupported}, Vector512 accelerated {Vector512.IsHardwareAccelerated}");
Console.WriteLine($"Paths this CPU runs: {string.Join(", ", KernelPaths.Supported)}");
Console.WriteLine($"Tolerance: |path − scalar| ≤ {DotPathCheck.RelativeTolerance:g}·Σ|wᵢ·aᵢ|");
Console.WriteLine();

WeightFormat[] formats = TypeTraits.All
    .Where(f => types.Length == 0 || types.Contains(f.Type.ToString(), StringComparer.OrdinalIgnoreCase))
    .ToArray();
if (args.Contains("--digests"))
{
    IsaDigests.Write(formats, Console.Out);
    return 0;
}
KernelPath[] paths = [.. KernelPaths.Supported];
int failures = KernelCheckReport.Conformance(formats, paths, Console.Out);
if (speed)
{
    Console.WriteLine();
    KernelCheckReport.Throughput(formats, paths, TimeSpan.FromSeconds(seconds), Console.Out);
}
Console.WriteLine();
Console.WriteLine(failures == 0 ? "ALL PASS" : $"{failures} FAILURE(S)");
return failures == 0 ? 0 : 1;

static string? ArgValue(string[] args, string name)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}
