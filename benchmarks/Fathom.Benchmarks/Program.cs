using BenchmarkDotNet.Running;
using Fathom.Benchmarks;

// Run with: dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --filter '*ClassName*'
// Fathom against llama.cpp on full-size shapes: dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --sidebyside [-t 2]
if (args.Length > 0 && args[0] == "--sidebyside") return LlamaCppSideBySide.Run(args[1..]);
BenchmarkSwitcher.FromAssembly(typeof(LlamaCppSideBySide).Assembly).Run(args);
return 0;
