// Renders every (template x conversation x add_generation_prompt) with @huggingface/jinja, the JavaScript
// Jinja engine Hugging Face uses for chat templates, and writes the results that Fathom's native renderers
// must reproduce character for character. Run: npm ci && node render.mjs
import { readFileSync, writeFileSync } from "node:fs";
import { Template } from "@huggingface/jinja";

const here = (p) => new URL(p, import.meta.url);
const jinjaVersion = JSON.parse(readFileSync(here("node_modules/@huggingface/jinja/package.json"), "utf8")).version;

const manifest = JSON.parse(readFileSync(here("templates.json"), "utf8"));
const conversations = JSON.parse(readFileSync(here("conversations.json"), "utf8"));

const templates = manifest.map((entry) => {
  const source = readFileSync(here(entry.file), "utf8");
  const template = new Template(source);
  const renderings = [];
  for (const conversation of conversations) {
    for (const addGenerationPrompt of [false, true]) {
      const context = {
        messages: conversation.messages,
        add_generation_prompt: addGenerationPrompt,
        bos_token: entry.bosToken ?? "",
        eos_token: entry.eosToken ?? "",
        ...(conversation.tools ? { tools: conversation.tools } : {}),
        ...(conversation.options ?? {}),
      };
      try {
        renderings.push({ conversation: conversation.name, addGenerationPrompt, output: template.render(context) });
      } catch (error) {
        renderings.push({ conversation: conversation.name, addGenerationPrompt, error: String(error.message ?? error) });
      }
    }
  }
  return { id: entry.id, family: entry.family, bosToken: entry.bosToken, eosToken: entry.eosToken, template: source, renderings };
});

const result = {
  generator: `@huggingface/jinja ${jinjaVersion} via tests/reference/chat-templates/render.mjs`,
  conversations,
  templates,
};
const target = here("../../Fathom.Tests/Tokenization/Data/chat-templates.expected.json");
writeFileSync(target, JSON.stringify(result, null, 1) + "\n");
const errors = templates.flatMap((t) => t.renderings.filter((r) => r.error).map((r) => `${t.id} / ${r.conversation} / gen=${r.addGenerationPrompt}: ${r.error}`));
console.log(`wrote ${templates.length} templates x ${conversations.length} conversations x 2 to ${target.pathname}`);
for (const e of errors) console.log(`jinja error: ${e}`);
