using Fathom.Tokenization;

namespace Fathom.Tests.Tokenization;

public class ChatTemplateDetectionTests
{
    public static TheoryData<string> TemplateIds()
    {
        var data = new TheoryData<string>();
        foreach (var template in ChatTemplateReference.Templates)
            data.Add(template.GetProperty("id").GetString()!);
        return data;
    }

    private static ChatTemplateDetection DetectReference(string id)
    {
        var template = ChatTemplateReference.Template(id);
        return ChatTemplates.Detect(template.GetProperty("template").GetString(),
            ChatTemplateReference.OptionalString(template, "bosToken"), ChatTemplateReference.OptionalString(template, "eosToken"));
    }

    [Theory]
    [MemberData(nameof(TemplateIds))]
    public void RealTemplateIsRecognizedAsItsFamily(string id)
    {
        var detection = DetectReference(id);
        var expectedFamily = Enum.Parse<ChatTemplateFamily>(ChatTemplateReference.Template(id).GetProperty("family").GetString()!);
        Assert.True(detection.IsRecognized, detection.Reason);
        Assert.Equal(expectedFamily, detection.Family);
        Assert.Equal(expectedFamily, detection.Template.Family);
    }

    [Theory]
    [MemberData(nameof(TemplateIds))]
    public void OpensThinkingAgreesWithTheJinjaGenerationPrompt(string id)
    {
        // Independent evidence: the reference rendering of a one-message chat with the generation prompt.
        var rendering = ChatTemplateReference.Template(id).GetProperty("renderings").EnumerateArray().Single(r =>
            r.GetProperty("conversation").GetString() == "single-user" && r.GetProperty("addGenerationPrompt").GetBoolean());
        bool jinjaOpensThinking = rendering.GetProperty("output").GetString()!.EndsWith("<think>\n", StringComparison.Ordinal);
        Assert.Equal(jinjaOpensThinking, DetectReference(id).Template.OpensThinking);
    }

    [Theory]
    [InlineData("deepseek-v3", "V3")]
    [InlineData("deepseek-v3-0324", "V3March2025")]
    [InlineData("deepseek-r1", "R1")]
    [InlineData("deepseek-r1-think", "R1Thinking")]
    [InlineData("deepseek-r1-distill", "R1Distill")]
    [InlineData("deepseek-r1-distill-original", "R1DistillOriginal")]
    public void DeepSeekTemplatesMatchTheNamedVariants(string id, string variantName)
    {
        var expected = (DeepSeekTemplateVariant)typeof(DeepSeekTemplateVariant).GetProperty(variantName)!.GetValue(null)!;
        var template = Assert.IsType<DeepSeekChatTemplate>(DetectReference(id).Template);
        Assert.Equal(expected, template.Variant);
    }

    [Fact]
    public void ForFamilyRendersLikeTheNewestReleasedTemplate()
    {
        var conversation = ChatTemplateReference.Conversation("reasoning-several-turns");
        foreach (var (id, family) in new[] { ("deepseek-v3-0324", ChatTemplateFamily.DeepSeekV3), ("deepseek-r1-think", ChatTemplateFamily.DeepSeekR1), ("qwen2.5", ChatTemplateFamily.ChatML), ("qwen3", ChatTemplateFamily.Qwen3), ("llama-3.1", ChatTemplateFamily.Llama3) })
        {
            var template = ChatTemplateReference.Template(id);
            string expected = template.GetProperty("renderings").EnumerateArray().Single(r =>
                r.GetProperty("conversation").GetString() == "reasoning-several-turns" && r.GetProperty("addGenerationPrompt").GetBoolean()).GetProperty("output").GetString()!;
            var renderer = ChatTemplates.ForFamily(family);
            Assert.Equal(expected, renderer.Render(ChatTemplateReference.Messages(conversation), true, ChatTemplateReference.Options(template, conversation)));
        }
    }

    [Fact]
    public void MissingTemplateFallsBackByBosAndSaysSo()
    {
        var deepSeek = ChatTemplates.Detect(null, DeepSeekChatTemplate.BeginOfSentence, DeepSeekChatTemplate.EndOfSentence);
        Assert.False(deepSeek.IsRecognized);
        Assert.Equal(ChatTemplateFamily.Unrecognized, deepSeek.Family);
        Assert.IsType<DeepSeekChatTemplate>(deepSeek.Template);
        Assert.Contains("no chat template", deepSeek.Reason);

        var llama = ChatTemplates.Detect("", "<|begin_of_text|>", "<|eot_id|>");
        Assert.False(llama.IsRecognized);
        Assert.IsType<Llama3ChatTemplate>(llama.Template);

        var unknown = ChatTemplates.Detect("{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}");
        Assert.False(unknown.IsRecognized);
        Assert.Equal(ChatTemplateFamily.Unrecognized, unknown.Family);
        Assert.IsType<ChatMLChatTemplate>(unknown.Template);
        Assert.Contains("matches no known family", unknown.Reason);
    }

    [Fact]
    public void UnknownDeepSeekLayoutIsReportedAsNotRenderedExactly()
    {
        // DeepSeek markers, but a tool-call condition none of the known templates uses.
        string text = ChatTemplateReference.Template("deepseek-v3").GetProperty("template").GetString()!
            .Replace("message['content'] is none", "message['tool_calls'] | length > 0", StringComparison.Ordinal);
        var detection = ChatTemplates.Detect(text);
        Assert.False(detection.IsRecognized);
        Assert.Equal(ChatTemplateFamily.Unrecognized, detection.Family);
        Assert.IsType<DeepSeekChatTemplate>(detection.Template);
        Assert.Contains("not one of the known DeepSeek layouts", detection.Reason);
    }
}
