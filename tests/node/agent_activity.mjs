// The official openai-node SDK reads a chat-completions stream of a run in which OpenCode's own
// `bash` tool runs, once with the agent's activity shown (request header `x-opencode-activity: 1`,
// which adds `: opencode-activity {json}` SSE comments) and once without. Both must parse without
// error and give the same text. Prints one JSON line for tests/it/agent_mode.rs to assert on. Needs
// OPENAI_SDK_DIR (where tests/it/support/node_sdk.rs installed the pinned `openai`), GATEWAY_URL and,
// if keyed, API_KEY.
import { createRequire } from "node:module";

const require = createRequire(`${process.env.OPENAI_SDK_DIR}/package.json`);
const { OpenAI } = require("openai");

const client = new OpenAI({
  baseURL: `${process.env.GATEWAY_URL}/v1`,
  apiKey: process.env.API_KEY || "unused",
  maxRetries: 0,
  timeout: 60_000,
});
const prompt = 'node sdk [call:bash:{"command":"echo sdk-activity","description":"say it"}]';

async function read(activity) {
  const headers = activity ? { "x-opencode-activity": "1" } : {};
  const stream = await client.chat.completions.create(
    { model: "mock/echo", stream: true, messages: [{ role: "user", content: prompt }] },
    { headers },
  );
  let content = "";
  let chunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    chunks += 1;
    const choice = chunk.choices[0];
    if (choice?.delta?.content) content += choice.delta.content;
    if (choice?.finish_reason) finish = choice.finish_reason;
  }
  return { content, chunks, finish };
}

console.log(JSON.stringify({ with: await read(true), without: await read(false) }));
