// The official openai-node SDK against MemShadow: what an app written for OpenAI sees.
// Driven by tests/proxy/test_node_sdk.py, which scripts the upstream's answers in this order
// and checks the JSON this prints. OPENAI_BASE_URL and OPENAI_API_KEY are all it is given.
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0 });
const seen = {};
const user = "nd";
const fact = "I just moved to Porto and I adopted a greyhound called Biscuit.";

const told = await client.chat.completions.create({
  model: "gpt-4o-mini",
  user,
  messages: [{ role: "user", content: fact }],
});
seen.chat = told.choices[0].message.content;

const stream = await client.chat.completions.create({
  model: "gpt-4o-mini",
  user,
  stream: true,
  messages: [{ role: "user", content: "Thanks!" }],
});
seen.streamed = "";
for await (const chunk of stream) seen.streamed += chunk.choices[0]?.delta?.content ?? "";

const tools = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Weather in Porto?" }],
  tools: [{ type: "function", function: { name: "weather", parameters: { type: "object" } } }],
});
seen.tool_call = tools.choices[0].message.tool_calls[0].function;

const response = await client.responses.create({ model: "gpt-4o-mini", input: "Hi" });
seen.response = response.output_text;

const events = await client.responses.create({ model: "gpt-4o-mini", input: "Hi", stream: true });
seen.events = [];
for await (const event of events) seen.events.push(event.type);

try {
  await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "Hi" }] });
} catch (error) {
  seen.rate_limited = { typed: error instanceof OpenAI.RateLimitError, message: error.message };
}

try {
  const stranger = new OpenAI({ apiKey: "msk-wrong", maxRetries: 0 });
  await stranger.chat.completions.create({ model: "m", messages: [{ role: "user", content: "Hi" }] });
} catch (error) {
  seen.bad_key = { typed: error instanceof OpenAI.AuthenticationError, status: error.status };
}

// Capture runs in the background: ask until the fact comes back as memory.
for (let attempt = 0; attempt < 100; attempt++) {
  const { response: raw } = await client.chat.completions
    .create({
      model: "gpt-4o-mini",
      user,
      messages: [{ role: "user", content: "What is my greyhound called? Biscuit?" }],
    })
    .withResponse();
  seen.memory_status = raw.headers.get("x-memory-status");
  if (seen.memory_status === "ok") break;
  await new Promise((resolve) => setTimeout(resolve, 50));
}

console.log(JSON.stringify(seen));
