using Fathom.Tokenization;

namespace Fathom.Tests.Tokenization;

public class ChatMessageValidationTests
{
    public static TheoryData<string> Families() =>
        new() { nameof(ChatTemplateFamily.DeepSeekV3), nameof(ChatTemplateFamily.DeepSeekR1), nameof(ChatTemplateFamily.ChatML), nameof(ChatTemplateFamily.Qwen3), nameof(ChatTemplateFamily.Llama3) };

    private static ChatTemplate Renderer(string family) => ChatTemplates.ForFamily(Enum.Parse<ChatTemplateFamily>(family));

    [Theory]
    [InlineData("robot")]
    [InlineData("System")]
    [InlineData("")]
    [InlineData("function")]
    public void UnknownRoleNameIsAClearError(string role)
    {
        var e = Assert.Throws<ChatTemplateException>(() => ChatRoles.Parse(role));
        Assert.Contains($"'{role}'", e.Message);
        Assert.Contains("system, user, assistant or tool", e.Message);
    }

    [Fact]
    public void MissingRoleNameIsAClearError() =>
        Assert.Contains("no role", Assert.Throws<ChatTemplateException>(() => ChatRoles.Parse(null)).Message);

    [Theory]
    [MemberData(nameof(Families))]
    public void OutOfRangeRoleValueIsRejectedByEveryRenderer(string family)
    {
        var messages = new[] { ChatMessage.User("hi"), new ChatMessage((ChatRole)42, "??") };
        var e = Assert.Throws<ChatTemplateException>(() => Renderer(family).Render(messages, true));
        Assert.Contains("42", e.Message);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void NullContentOutsideAToolCallTurnIsRejected(string family)
    {
        var e = Assert.Throws<ChatTemplateException>(() => Renderer(family).Render([new ChatMessage(ChatRole.User, null)], true));
        Assert.Contains("no content", e.Message);
        Assert.Throws<ChatTemplateException>(() => Renderer(family).Render([ChatMessage.User("q"), ChatMessage.Assistant(null)], true));
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void EmptyConversationAndMisplacedToolCallsAreRejected(string family)
    {
        Assert.Throws<ChatTemplateException>(() => Renderer(family).Render([], true));
        var call = new ChatToolCall("c1", "f", "{}");
        Assert.Contains("only assistant", Assert.Throws<ChatTemplateException>(() =>
            Renderer(family).Render([new ChatMessage(ChatRole.User, "x") { ToolCalls = [call] }], true)).Message);
        Assert.Contains("empty tool-call list", Assert.Throws<ChatTemplateException>(() =>
            Renderer(family).Render([ChatMessage.User("x"), ChatMessage.Assistant(null, toolCalls: [])], true)).Message);
    }

    [Theory]
    [InlineData("[1, 2]")]
    [InlineData("\"tool\"")]
    [InlineData("{not json")]
    public void ToolDefinitionMustBeAJsonObject(string json) =>
        Assert.Throws<ChatTemplateException>(() => ChatToolDefinition.FromJson(json));

    [Fact]
    public void FunctionToolHasTheOpenAIShape()
    {
        var tool = ChatToolDefinition.Function("get_time", "Time now", """{"type": "object", "properties": {}}""");
        Assert.Equal("""{"type":"function","function":{"name":"get_time","description":"Time now","parameters":{"type":"object","properties":{}}}}""", tool.Json.GetRawText());
    }
}
