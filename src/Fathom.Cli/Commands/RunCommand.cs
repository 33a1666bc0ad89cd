using System.CommandLine;
using Fathom.Generation;
using Fathom.Runtime;
using Fathom.Tokenization;

namespace Fathom.Cli.Commands;

/// <summary>
/// <c>fathom run -m MODEL</c>: an interactive chat in the terminal. Streams the reasoning dimmed and the answer
/// plainly, keeps the conversation in the KV cache between turns, and prints tokens/s after each answer.
/// </summary>
public static class RunCommand
{
    public const string NoModelHelp =
        "fathom run needs a model: fathom run -m MODEL.gguf\n" +
        "Get a GGUF of DeepSeek-R1 or one of its distills (e.g. a DeepSeek-R1-Distill-Qwen-1.5B Q4_K_M GGUF, or\n" +
        "Unsloth's DeepSeek-R1 UD-IQ1_S split files: pass the -00001-of-0000N.gguf part). To see the whole\n" +
        "pipeline without downloading anything, run: fathom demo";

    public static Command Create()
    {
        var args = new ModelArguments();
        args.Model.Required = false;
        var tokens = new Option<int>("--n-predict", "-n") { Description = "Most tokens per answer (default 4096).", DefaultValueFactory = _ => 4096 };
        var hideReasoning = new Option<bool>("--hide-reasoning") { Description = "Do not show the model's reasoning." };
        var system = new Option<string?>("--system") { Description = "A system prompt." };
        var command = new Command("run", "Chat with a model in the terminal (/clear, /exit, /set ...).");
        args.AddTo(command);
        command.Options.Add(tokens);
        command.Options.Add(hideReasoning);
        command.Options.Add(system);
        command.SetAction(r =>
        {
            TextWriter output = r.InvocationConfiguration.Output, error = r.InvocationConfiguration.Error;
            string? path = r.GetValue(args.Model);
            if (path is null) { error.WriteLine(NoModelHelp); return 2; }
            return CommandErrors.Guard(error, () =>
            {
                SamplingOptions sampling = args.Sampling(r); // validated before the model is loaded
                using LoadedModel model = LoadedModel.Open(path, args.ModelOptions(r));
                PlacementArguments.Report(model.Model, error);
                var chat = new Chat(model, model.CreateSession(r.GetValue(args.Context)), sampling, r.GetValue(tokens), r.GetValue(system));
                var console = new StreamingConsole(output, showReasoning: !r.GetValue(hideReasoning));
                return chat.Loop(Console.In, output, error, console);
            });
        });
        return command;
    }

    /// <summary>The conversation state of one terminal chat.</summary>
    public sealed class Chat(LoadedModel model, InferenceSession session, SamplingOptions initialSampling, int maxTokens, string? systemPrompt)
    {
        private readonly List<ChatMessage> _messages = [];
        private SamplingOptions _sampling = initialSampling;
        private string? _system = systemPrompt;

        public int Loop(TextReader input, TextWriter output, TextWriter error, StreamingConsole console)
        {
            output.WriteLine($"Chatting with {model.Model.Config.Architecture} ({model.Template.Family} template). /help for commands.");
            while (true)
            {
                output.Write("> ");
                output.Flush();
                string? line = input.ReadLine();
                if (line is null || line.Trim() is "/exit" or "/quit" or "/bye") return 0;
                if (line.Trim().Length == 0) continue;
                if (line.StartsWith('/')) { output.WriteLine(Command(line.Trim(), console)); continue; }

                _messages.Add(ChatMessage.User(line));
                var conversation = new List<ChatMessage>();
                if (!string.IsNullOrEmpty(_system)) conversation.Add(ChatMessage.System(_system));
                conversation.AddRange(_messages);
                IReadOnlyList<int> prompt = model.TokenizeChat(conversation);
                var options = new GenerationOptions
                {
                    MaxTokens = maxTokens, Sampling = _sampling, StartsInReasoning = model.Template.Template.OpensThinking,
                };
                GenerationResult result;
                try
                {
                    result = model.Generator.Generate(session, prompt, options, console.Write);
                }
                catch (ContextFullException e)
                {
                    _messages.RemoveAt(_messages.Count - 1);
                    error.WriteLine($"error: {e.Message} Use /clear to start over.");
                    continue;
                }
                console.End();
                _messages.Add(ChatMessage.Assistant(result.Text, result.Reasoning.Length > 0 ? result.Reasoning : null));
                error.WriteLine(GenerateCommand.Timing(result));
            }
        }

        /// <summary>Handles a /command and returns what to print.</summary>
        public string Command(string line, StreamingConsole console)
        {
            string[] parts = line.Split(' ', 3, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            switch (parts[0])
            {
                case "/clear":
                    _messages.Clear();
                    session.Reset();
                    return "Conversation cleared.";
                case "/help":
                    return "/clear  forget the conversation\n/exit  quit\n/set temp|top-p|top-k|min-p|seed VALUE\n/set system TEXT\n/set reasoning show|hide";
                case "/set" when parts.Length == 3:
                    SamplingOptions previous = _sampling;
                    try
                    {
                        string value = parts[2];
                        switch (parts[1])
                        {
                            case "temp": _sampling = _sampling with { Temperature = float.Parse(value, System.Globalization.CultureInfo.InvariantCulture) }; break;
                            case "top-p": _sampling = _sampling with { TopP = float.Parse(value, System.Globalization.CultureInfo.InvariantCulture) }; break;
                            case "top-k": _sampling = _sampling with { TopK = int.Parse(value, System.Globalization.CultureInfo.InvariantCulture) }; break;
                            case "min-p": _sampling = _sampling with { MinP = float.Parse(value, System.Globalization.CultureInfo.InvariantCulture) }; break;
                            case "seed": _sampling = _sampling with { Seed = ulong.Parse(value, System.Globalization.CultureInfo.InvariantCulture) }; break;
                            case "system": _system = value; _messages.Clear(); session.Reset(); return "System prompt set; conversation cleared.";
                            case "reasoning": console.ShowReasoning = value != "hide"; return $"Reasoning {(console.ShowReasoning ? "shown" : "hidden")}.";
                            default: return $"Unknown setting '{parts[1]}'. /help lists them.";
                        }
                        _sampling.Validate();
                        return $"{parts[1]} = {value}";
                    }
                    catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
                    {
                        _sampling = previous;
                        return $"Bad value: {e.Message}";
                    }
                default:
                    return $"Unknown command '{line}'. /help lists the commands.";
            }
        }
    }
}
