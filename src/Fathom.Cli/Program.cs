// The `fathom` command. Each verb lives in Commands/<Verb>Command.cs and only wires options to the engine.
return 0;
