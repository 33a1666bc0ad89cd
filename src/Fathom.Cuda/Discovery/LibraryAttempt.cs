namespace Fathom.Cuda.Discovery;

/// <summary>One place a native library was looked for, and what happened there.</summary>
/// <param name="Candidate">A full path, or a bare file name handed to the system loader.</param>
/// <param name="Outcome">"loaded", "not present", or the loader's error.</param>
public sealed record LibraryAttempt(string Candidate, string Outcome);
