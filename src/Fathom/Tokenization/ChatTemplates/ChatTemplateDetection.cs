namespace Fathom.Tokenization;

/// <summary>
/// What <see cref="ChatTemplates.Detect"/> found. <see cref="Template"/> is always usable: when
/// <see cref="IsRecognized"/> is false it is a fallback chosen from the BOS/EOS texts (or ChatML), and
/// <see cref="Reason"/> says why, for a warning the caller can show.
/// </summary>
public sealed record ChatTemplateDetection(ChatTemplateFamily Family, ChatTemplate Template, bool IsRecognized, string Reason);
