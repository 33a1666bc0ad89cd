using Fathom.Gguf;
using Fathom.Runtime;

namespace Fathom.Cli.Commands;

/// <summary>Turns the engine's expected failures into one-line messages and exit codes, never stack traces.</summary>
internal static class CommandErrors
{
    /// <summary>Exit codes: 1 a file cannot be opened, CUDA failed or the model does not fit the GPU, 2 bad input (file, arguments, context), 0 success.</summary>
    public static int Guard(TextWriter error, Func<int> action)
    {
        try
        {
            return action();
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException or IOException)
        {
            error.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (Models.Placement.PlacementException e)
        {
            // The model does not fit the GPU as placed: the message has the numbers and the options that help.
            error.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (Fathom.Cuda.Driver.CudaException e)
        {
            // No GPU, a missing library or a kernel failure: the message names the call or the library.
            error.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (Exception e) when (e is GgufFormatException or InvalidDataException or NotSupportedException or ArgumentException
                                      or ContextFullException or Tokenization.ChatTemplateException)
        {
            error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }
}
