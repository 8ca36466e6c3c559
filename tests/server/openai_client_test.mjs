// Drives a running `tierserve serve` with the official `openai` npm client (tests/npm):
// chat and completions, streaming and not, n > 1, stop strings, usage, and the error classes
// the client raises for 400, 401 and 404. Usage: node openai_client_test.mjs BASE_URL API_KEY
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'npm', 'package.json'));
const OpenAI = require('openai');

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
const model = 'demo';
const prompt = 'This program is free software; you can redistribute it';
let failures = 0;

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

await check('models.list', async () => {
  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  assert.ok(ids.includes(model), `models: ${ids}`);
  const m = models.data.find((x) => x.id === model);
  assert.equal(m.object, 'model');
  assert.ok(m.max_model_len > 0);
});

let greedyText = '';
await check('completions, not streamed', async () => {
  const c = await client.completions.create({
    model, prompt, max_tokens: 12, temperature: 0, ignore_eos: true,
  });
  assert.equal(c.object, 'text_completion');
  assert.equal(c.choices.length, 1);
  assert.equal(c.choices[0].finish_reason, 'length');
  assert.ok(c.choices[0].text.length > 0);
  assert.equal(c.usage.completion_tokens, 12);
  assert.ok(c.usage.prompt_tokens > 0);
  assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + 12);
  greedyText = c.choices[0].text;
});

await check('completions, streamed, with usage', async () => {
  const stream = await client.completions.create({
    model, prompt, max_tokens: 12, temperature: 0, stream: true, ignore_eos: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.choices.length > 0) {
      text += chunk.choices[0].text;
      if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, greedyText, 'a streamed greedy completion equals the non-streamed one');
  assert.equal(finish, 'length');
  assert.ok(usage && usage.completion_tokens === 12, `usage ${JSON.stringify(usage)}`);
});

await check('completions, list of prompts and token ids', async () => {
  const c = await client.completions.create({
    model, prompt: [prompt, 'Copyright'], max_tokens: 4, temperature: 0,
  });
  assert.equal(c.choices.length, 2);
  assert.deepEqual(c.choices.map((x) => x.index).sort(), [0, 1]);
  const ids = await client.completions.create({ model, prompt: [1, 2, 3], max_tokens: 3 });
  assert.equal(ids.choices.length, 1);
  assert.equal(ids.usage.prompt_tokens, 3);
});

await check('completions, stop string', async () => {
  assert.ok(greedyText.length > 4);
  const stop = greedyText.slice(2, 4);
  const c = await client.completions.create({
    model, prompt, max_tokens: 12, temperature: 0, ignore_eos: true, stop,
  });
  assert.equal(c.choices[0].finish_reason, 'stop');
  assert.equal(c.choices[0].text, greedyText.slice(0, greedyText.indexOf(stop)));
});

await check('completions, n = 3 with a seed', async () => {
  const c = await client.completions.create({
    model, prompt, max_tokens: 8, temperature: 1.0, n: 3, seed: 7, ignore_eos: true,
  });
  assert.equal(c.choices.length, 3);
  assert.deepEqual(c.choices.map((x) => x.index).sort(), [0, 1, 2]);
  assert.equal(c.usage.completion_tokens, 24);
});

let chatText = '';
await check('chat, not streamed', async () => {
  const c = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'What is free software?' }], max_tokens: 10,
    temperature: 0,
  });
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.choices[0].message.role, 'assistant');
  assert.ok(typeof c.choices[0].message.content === 'string');
  assert.ok(['stop', 'length'].includes(c.choices[0].finish_reason));
  assert.ok(c.usage.prompt_tokens > 0);
  chatText = c.choices[0].message.content;
});

await check('chat, streamed: role first, then content, then finish_reason', async () => {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'What is free software?' }], max_tokens: 10,
    temperature: 0, stream: true,
  });
  let first = null;
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (first === null) first = chunk;
    for (const ch of chunk.choices) {
      if (ch.delta.content) text += ch.delta.content;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  assert.equal(first.choices[0].delta.role, 'assistant');
  assert.equal(text, chatText);
  assert.ok(['stop', 'length'].includes(finish));
});

await check('400: beyond the maximum context length', async () => {
  await assert.rejects(
    client.completions.create({ model, prompt, max_tokens: 10000000 }),
    (e) => e instanceof OpenAI.BadRequestError && /maximum context length/.test(e.message),
  );
  await assert.rejects(
    client.completions.create({ model, prompt, temperature: -1 }),
    (e) => e instanceof OpenAI.BadRequestError,
  );
});

await check('401: wrong API key', async () => {
  const bad = new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError);
});

await check('404: unknown model', async () => {
  await assert.rejects(
    client.completions.create({ model: 'no-such-model', prompt }),
    (e) => e instanceof OpenAI.NotFoundError,
  );
});

if (failures > 0) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('all openai client checks passed');
