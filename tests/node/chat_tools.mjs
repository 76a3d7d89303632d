// The official openai-node SDK runs the whole client-tools loop of chat completions against the
// gateway: by hand (create → run the tool → create), with the SDK's stream helper (parallel
// calls, then the results streamed back), and with its `runTools` runner over several rounds.
// Prints one JSON line for tests/it/client_tools.rs to assert on. Needs OPENAI_SDK_DIR (where
// tests/it/support/node_sdk.rs installed the pinned `openai`), GATEWAY_URL and, if keyed, API_KEY.
import { createRequire } from "node:module";

const require = createRequire(`${process.env.OPENAI_SDK_DIR}/package.json`);
const { OpenAI } = require("openai");

const client = new OpenAI({
  baseURL: `${process.env.GATEWAY_URL}/v1`,
  apiKey: process.env.API_KEY || "unused",
  maxRetries: 0,
  timeout: 60_000,
});
const model = process.env.MODEL || "mock/echo";

const cityParams = {
  type: "object",
  properties: { city: { type: "string" } },
  required: ["city"],
  additionalProperties: false,
};
const weatherTool = {
  type: "function",
  function: { name: "get_weather", description: "Weather in a city", parameters: cityParams, strict: true },
};
const timeTool = {
  type: "function",
  function: { name: "get_time", description: "Local time in a city", parameters: cityParams, strict: true },
};

/** The client's own tools. */
function runTool(name, args) {
  if (name === "get_weather") return `sunny in ${args.city}`;
  if (name === "get_time") return `noon in ${args.city}`;
  throw new Error(`unknown tool ${name}`);
}

const callsOf = (message) =>
  (message.tool_calls ?? []).map((c) => ({
    id: c.id,
    type: c.type,
    name: c.function.name,
    arguments: JSON.parse(c.function.arguments),
  }));

const out = {};

// 1. By hand, JSON answers.
{
  const messages = [{ role: "user", content: 'sdk weather? [call:get_weather:{"city":"Paris"}]' }];
  const first = await client.chat.completions.create({ model, messages, tools: [weatherTool] });
  const message = first.choices[0].message;
  messages.push(message);
  for (const call of message.tool_calls) {
    const args = JSON.parse(call.function.arguments);
    messages.push({ role: "tool", tool_call_id: call.id, content: runTool(call.function.name, args) });
  }
  const second = await client.chat.completions.create({ model, messages, tools: [weatherTool] });
  out.manual = {
    finish1: first.choices[0].finish_reason,
    calls: callsOf(message),
    finish2: second.choices[0].finish_reason,
    content: second.choices[0].message.content,
  };
}

// 2. The stream helper: two parallel calls, then the results streamed back.
{
  const messages = [
    { role: "user", content: 'sdk both [call:get_weather:{"city":"Oslo"}] [call:get_time:{"city":"Lima"}]' },
  ];
  const tools = [weatherTool, timeTool];
  const first = client.chat.completions.stream({ model, messages, tools });
  const argumentsDone = [];
  first.on("tool_calls.function.arguments.done", (e) =>
    argumentsDone.push({ index: e.index, name: e.name, arguments: e.parsed_arguments ?? JSON.parse(e.arguments) }),
  );
  const completion = await first.finalChatCompletion();
  const message = completion.choices[0].message;
  messages.push(message);
  for (const call of message.tool_calls) {
    const args = JSON.parse(call.function.arguments);
    messages.push({ role: "tool", tool_call_id: call.id, content: runTool(call.function.name, args) });
  }
  const second = client.chat.completions.stream({ model, messages, tools });
  const deltas = [];
  second.on("content.delta", (e) => deltas.push(e.delta));
  const final = await second.finalChatCompletion();
  out.streamed = {
    finish1: completion.choices[0].finish_reason,
    calls: callsOf(message),
    argumentsDone,
    finish2: final.choices[0].finish_reason,
    content: final.choices[0].message.content,
    deltas: deltas.length,
  };
}

// 3. The runTools runner (streaming), two tool rounds before the answer.
{
  const seen = [];
  const runner = client.chat.completions.runTools({
    model,
    stream: true,
    messages: [{ role: "user", content: 'sdk loop [sticky:2] [call:get_weather:{"city":"Rome"}]' }],
    tools: [
      {
        type: "function",
        function: {
          name: "get_weather",
          description: "Weather in a city",
          parameters: cityParams,
          parse: JSON.parse,
          function: (args) => {
            seen.push(args);
            return runTool("get_weather", args);
          },
        },
      },
    ],
  });
  const content = await runner.finalContent();
  out.runner = {
    content,
    toolCalls: seen,
    roles: runner.messages.map((m) => m.role),
  };
}

console.log(JSON.stringify(out));
