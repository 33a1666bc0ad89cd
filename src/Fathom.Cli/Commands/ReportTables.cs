using Spectre.Console;
using Spectre.Console.Rendering;

namespace Fathom.Cli.Commands;

/// <summary>The Spectre.Console pieces the human-readable reports (<c>info</c>, <c>bench</c>) share.</summary>
internal static class ReportTables
{
    /// <summary>
    /// A console writing to <paramref name="output"/>: colours and terminal width on a real terminal; plain text
    /// 160 columns wide when redirected or captured (tests, pipes).
    /// </summary>
    public static IAnsiConsole Console(TextWriter output)
    {
        bool terminal = ReferenceEquals(output, System.Console.Out) && !System.Console.IsOutputRedirected;
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
        });
        if (!terminal) console.Profile.Width = 160;
        return console;
    }

    public static Table New(string title, params string[] columns)
    {
        var table = new Table { Title = new TableTitle(Markup.Escape(title)), Border = TableBorder.Rounded };
        foreach (string c in columns) table.AddColumn(new TableColumn(new Text(c)));
        return table;
    }

    /// <summary>Adds a row of plain-text cells (not markup: tensor names and metadata may contain '[' and ']').</summary>
    public static void Row(Table table, params string[] cells) => table.AddRow(cells.Select(c => (IRenderable)new Text(c)).ToArray());
}
