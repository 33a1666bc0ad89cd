using System.Text.RegularExpressions;

namespace Fathom.Models.Placement;

/// <summary>
/// One <c>--override-tensor REGEX=DEVICE</c> rule, as llama.cpp reads it: a tensor whose name contains a match of
/// <see cref="Pattern"/> (a search, not a whole-name match) goes to <see cref="Device"/>.
/// </summary>
public sealed record TensorOverride(Regex Pattern, PlacementDevice Device)
{
    /// <summary>The device names accepted after '=', compared without case (llama.cpp's buffer type names).</summary>
    public static IReadOnlyList<string> DeviceNames { get; } = ["cpu", "cuda0"];

    /// <summary>
    /// Parses one option value: rules separated by commas, each <c>REGEX=cpu</c> or <c>REGEX=cuda0</c>. Throws
    /// <see cref="ArgumentException"/> naming the rule for a missing '=', an empty pattern, a pattern that is not a
    /// regular expression, or an unknown device.
    /// </summary>
    public static IReadOnlyList<TensorOverride> ParseList(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        var rules = new List<TensorOverride>();
        foreach (string rule in value.Split(','))
        {
            int equals = rule.LastIndexOf('=');
            if (equals < 0) throw new ArgumentException($"--override-tensor rule '{rule}' has no '=': write REGEX=cpu or REGEX=cuda0");
            string pattern = rule[..equals], device = rule[(equals + 1)..].Trim();
            if (pattern.Length == 0) throw new ArgumentException($"--override-tensor rule '{rule}' has no tensor name pattern before '='");
            Regex regex;
            try
            {
                regex = new Regex(pattern, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"--override-tensor pattern '{pattern}' is not a regular expression: {e.Message}", e);
            }
            rules.Add(new TensorOverride(regex, ParseDevice(device, rule)));
        }
        return rules;
    }

    private static PlacementDevice ParseDevice(string name, string rule)
    {
        if (name.Equals("cpu", StringComparison.OrdinalIgnoreCase)) return PlacementDevice.Cpu;
        if (name.Equals("cuda0", StringComparison.OrdinalIgnoreCase)) return PlacementDevice.Gpu;
        throw new ArgumentException($"--override-tensor rule '{rule}': unknown device '{name}'; available: {string.Join(", ", DeviceNames)}");
    }

    public override string ToString() => $"{Pattern}={(Device == PlacementDevice.Cpu ? "cpu" : "cuda0")}";
}
