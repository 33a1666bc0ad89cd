using Fathom.Tokenization;

namespace Fathom.Tests.Tokenization;

/// <summary>
/// Every (real template x conversation x generation prompt) rendered natively must equal Hugging Face's Jinja
/// rendering character for character; where Jinja fails on the conversation, the native renderer must refuse it too.
/// </summary>
public class ChatTemplateRenderingTests
{
    public static TheoryData<string, string, bool> Cases()
    {
        var data = new TheoryData<string, string, bool>();
        foreach (var template in ChatTemplateReference.Templates)
            foreach (var rendering in template.GetProperty("renderings").EnumerateArray())
                data.Add(template.GetProperty("id").GetString()!, rendering.GetProperty("conversation").GetString()!, rendering.GetProperty("addGenerationPrompt").GetBoolean());
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void NativeRenderingEqualsJinja(string templateId, string conversationName, bool addGenerationPrompt)
    {
        var template = ChatTemplateReference.Template(templateId);
        var conversation = ChatTemplateReference.Conversation(conversationName);
        var rendering = template.GetProperty("renderings").EnumerateArray().Single(r =>
            r.GetProperty("conversation").GetString() == conversationName && r.GetProperty("addGenerationPrompt").GetBoolean() == addGenerationPrompt);

        var detection = ChatTemplates.Detect(template.GetProperty("template").GetString(),
            ChatTemplateReference.OptionalString(template, "bosToken"), ChatTemplateReference.OptionalString(template, "eosToken"));
        var messages = ChatTemplateReference.Messages(conversation);
        var options = ChatTemplateReference.Options(template, conversation);

        if (rendering.TryGetProperty("error", out var jinjaError))
        {
            var e = Assert.Throws<ChatTemplateException>(() => detection.Template.Render(messages, addGenerationPrompt, options));
            Assert.False(string.IsNullOrWhiteSpace(e.Message), $"Jinja failed with '{jinjaError.GetString()}'; ours must explain why too.");
            return;
        }
        string expected = rendering.GetProperty("output").GetString()!;
        string actual = detection.Template.Render(messages, addGenerationPrompt, options);
        Assert.Equal(expected, actual);
    }
}
