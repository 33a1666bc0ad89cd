using BenchmarkDotNet.Running;

// Run with: dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --filter '*ClassName*'
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
