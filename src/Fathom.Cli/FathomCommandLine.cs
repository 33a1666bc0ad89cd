using System.CommandLine;
using Fathom.Cli.Commands;

namespace Fathom.Cli;

/// <summary>The root command and its verbs; <see cref="Invoke"/> is what <c>Program</c> and in-process tests call.</summary>
public static class FathomCommandLine
{
    public static RootCommand Create()
    {
        var root = new RootCommand("Fathom: run DeepSeek reasoning models (R1, V3 and the distills) from GGUF files, in .NET.");
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(RunCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(PerplexityCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(DoctorCommand.Create());
        root.Subcommands.Add(AttentionBenchCommand.Create());
        return root;
    }

    public static int Invoke(string[] args, TextWriter output, TextWriter error) =>
        Create().Parse(args).Invoke(new InvocationConfiguration { Output = output, Error = error });
}
