using System.CommandLine;

namespace Fathom.Cli.Commands;

/// <summary>
/// <c>fathom doctor</c>: what this machine offers Fathom. The CPU's kernel paths; for CUDA, where the driver and
/// NVRTC were found (or every place looked and why each failed), the GPUs, and a compile-and-launch test. It
/// always exits 0 when it could look: a machine without a GPU is a valid answer, not an error.
/// </summary>
public static class DoctorCommand
{
    public static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of text." };
        var device = new Option<int>("--device") { Description = "The GPU to test (default 0).", DefaultValueFactory = _ => 0 };
        var noTest = new Option<bool>("--no-test") { Description = "Skip the compile-and-launch test." };
        var command = new Command("doctor", "Report CPU kernel paths and what CUDA libraries and GPUs were found, with a GPU test.");
        command.Options.Add(json);
        command.Options.Add(device);
        command.Options.Add(noTest);
        command.SetAction(r => Run(r.GetValue(json), r.GetValue(device), !r.GetValue(noTest), r.InvocationConfiguration.Output));
        return command;
    }

    public static int Run(bool json, int device, bool runTest, TextWriter output)
    {
        DoctorReport report = DoctorReport.Gather(device, runTest);
        if (json) output.WriteLine(report.ToJson().ToJsonString(InfoJson.Options));
        else report.WriteText(output);
        return 0;
    }
}
