// The official openai-node SDK drives the gateway's Responses API: create (with the
// `output_text` convenience), the stream helper continuing with `previous_response_id`, a
// function tool loop JSON and streamed, retrieve, input items, delete. Prints one JSON line for
// tests/it/responses.rs to assert on. Needs OPENAI_SDK_DIR, GATEWAY_URL and, if keyed, API_KEY.
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

const tools = [
  {
    type: "function",
    name: "get_weather",
    description: "Weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
      additionalProperties: false,
    },
    strict: true,
  },
];

const runTool = (name, args) => {
  if (name === "get_weather") return `sunny in ${args.city}`;
  throw new Error(`unknown tool ${name}`);
};

const outputsFor = (response) =>
  response.output
    .filter((i) => i.type === "function_call")
    .map((c) => ({ type: "function_call_output", call_id: c.call_id, output: runTool(c.name, JSON.parse(c.arguments)) }));

const out = {};

// 1. Create, then continue it with the stream helper.
const first = await client.responses.create({
  model,
  input: "sdk hello",
  instructions: "be brief",
  metadata: { suite: "sdk" },
});
out.create = { id: first.id, status: first.status, output_text: first.output_text, metadata: first.metadata };
{
  const stream = client.responses.stream({ model, input: "sdk again [count]", previous_response_id: first.id });
  const types = [];
  let deltas = "";
  stream.on("event", (e) => types.push(e.type));
  stream.on("response.output_text.delta", (e) => (deltas += e.delta));
  const final = await stream.finalResponse();
  out.stream = {
    id: final.id,
    status: final.status,
    output_text: final.output_text,
    deltas,
    types,
    previous_response_id: final.previous_response_id,
  };
}

// 2. A function tool loop, JSON.
{
  const calling = await client.responses.create({
    model,
    input: 'sdk weather? [call:get_weather:{"city":"Paris"}]',
    tools,
  });
  const answered = await client.responses.create({
    model,
    previous_response_id: calling.id,
    input: outputsFor(calling),
    tools,
  });
  out.tools = {
    calls: calling.output.filter((i) => i.type === "function_call").map((c) => ({ name: c.name, arguments: JSON.parse(c.arguments) })),
    output_text: answered.output_text,
    status: answered.status,
  };
}

// 3. The same loop streamed with the helper.
{
  const first = client.responses.stream({ model, input: 'sdk stream weather [call:get_weather:{"city":"Lima"}]', tools });
  const argumentDeltas = [];
  first.on("response.function_call_arguments.delta", (e) => argumentDeltas.push(e.delta));
  const calling = await first.finalResponse();
  const second = client.responses.stream({ model, previous_response_id: calling.id, input: outputsFor(calling), tools });
  const answered = await second.finalResponse();
  out.streamedTools = {
    calls: calling.output.filter((i) => i.type === "function_call").map((c) => ({ name: c.name, arguments: JSON.parse(c.arguments) })),
    argumentDeltas: argumentDeltas.join(""),
    output_text: answered.output_text,
  };
}

// 4. Retrieve, input items, delete.
{
  const got = await client.responses.retrieve(first.id);
  const page = await client.responses.inputItems.list(first.id, { order: "asc" });
  const deleted = await client.responses.delete(first.id);
  let afterDelete = null;
  try {
    await client.responses.retrieve(first.id);
  } catch (e) {
    afterDelete = { status: e.status, code: e.code ?? e.error?.code ?? null };
  }
  out.lifecycle = {
    retrieved_text: got.output_text,
    items: page.data.map((i) => ({ type: i.type, role: i.role, text: i.content?.[0]?.text })),
    deleted: deleted ?? null,
    afterDelete,
  };
}

console.log(JSON.stringify(out));
