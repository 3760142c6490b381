// The official openai npm client against a Chainference gateway: answers, streaming, stop
// sequences, usage, and the fields the gateway refuses by name.
// Usage: OPENAI_NODE_DIR=<dir with node_modules/openai> node check.mjs BASE_URL MODEL
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [baseURL, model] = process.argv.slice(2);
const require = createRequire(join(process.env.OPENAI_NODE_DIR, 'x.js'));
const { OpenAI } = require('openai');
const version = JSON.parse(readFileSync(join(process.env.OPENAI_NODE_DIR, 'node_modules/openai/package.json'))).version;
const client = new OpenAI({ baseURL, apiKey: 'not-needed', maxRetries: 0, timeout: 120_000 });
const messages = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'What is the capital of France?' },
];
const ANSWER = 'The capital of France is Paris.';

const models = [];
for await (const m of client.models.list()) models.push(m.id);
assert.ok(models.includes(model), `the model is listed: ${models}`);

const reply = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 64 });
assert.equal(reply.choices[0].message.content, ANSWER);
assert.equal(reply.choices[0].finish_reason, 'stop');
assert.deepEqual([reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens], [27, 7, 34]);

const stream = await client.chat.completions.create({
  model, messages, temperature: 0, max_tokens: 64, stream: true, stream_options: { include_usage: true },
});
let text = '';
let finish = null;
let usage = null;
for await (const chunk of stream) {
  if (chunk.choices.length) {
    text += chunk.choices[0].delta.content ?? '';
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  if (chunk.usage) usage = chunk.usage;
}
assert.equal(text, ANSWER);
assert.equal(finish, 'stop');
assert.equal(usage.total_tokens, 34);

const stopped = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 64, stop: ['Paris'] });
assert.equal(stopped.choices[0].message.content, 'The capital of France is ');
assert.equal(stopped.usage.total_tokens, 33);

const tool = { type: 'function', function: { name: 'lookup', parameters: { type: 'object', properties: {} } } };
for (const [extra, param] of [
  [{ n: 2 }, 'n'],
  [{ tools: [tool] }, 'tools'],
  [{ response_format: { type: 'json_object' } }, 'response_format'],
  [{ stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
]) {
  await assert.rejects(
    client.chat.completions.create({ model, messages, ...extra }),
    (error) => error instanceof OpenAI.BadRequestError && error.status === 400 && error.param === param,
    JSON.stringify(extra),
  );
}

// The legacy text completions API is not served; the error says what to use.
await assert.rejects(
  client.completions.create({ model, prompt: 'The capital of France is' }),
  (error) => error instanceof OpenAI.NotFoundError && error.code === 'unsupported_endpoint'
    && error.message.includes('/v1/chat/completions'),
);

console.log(`openai-node ${version}: all checks passed against ${baseURL}`);
