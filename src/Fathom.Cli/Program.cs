// The `fathom` command. Each verb lives in Commands/<Verb>Command.cs and only wires options to the engine.
using Fathom.Cli;

return FathomCommandLine.Invoke(args, Console.Out, Console.Error);
