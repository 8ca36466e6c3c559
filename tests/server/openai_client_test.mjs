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

// The server's own routes (outside /v1), with plain fetch.
const root = baseURL.replace(/\/v1$/, '');
async function post(route, body) {
  const r = await fetch(`${root}${route}`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  return { status: r.status, json: await r.json() };
}
const detokenize = async (tokens) => (await post('/detokenize', { model, tokens })).json.prompt;

await check('health, version, tokenize, detokenize, metrics', async () => {
  assert.equal((await fetch(`${root}/health`)).status, 200);
  const v = await (await fetch(`${root}/version`)).json();
  assert.equal(typeof v.version, 'string');
  const t = await post('/tokenize', { model, prompt });
  assert.equal(t.status, 200);
  assert.equal(t.json.count, t.json.tokens.length);
  assert.ok(t.json.max_model_len > 0);
  // llama.cpp's {"content"} adds no special tokens by default; vLLM's {"prompt"} does (BOS).
  const l = await post('/tokenize', { content: prompt });
  assert.equal(l.json.tokens.length, t.json.tokens.length - 1);
  assert.equal(await detokenize(l.json.tokens), prompt);
  const m = await (await fetch(`${root}/metrics`)).text();
  for (const name of ['vllm:num_requests_running', 'vllm:kv_cache_usage_perc',
    'vllm:generation_tokens_total', 'vllm:time_to_first_token_seconds_bucket',
    'vllm:request_queue_time_seconds_count', 'tierserve:tier_bytes_total']) {
    assert.ok(m.includes(name), `${name} in /metrics`);
  }
});

await check('chat template options: add_generation_prompt, continue_final_message, kwargs', async () => {
  const messages = [{ role: 'user', content: 'Hi' }];
  const withPrompt = (await post('/tokenize', { model, messages })).json.tokens;
  const without = (await post('/tokenize', { model, messages, add_generation_prompt: false })).json.tokens;
  assert.ok(without.length < withPrompt.length, 'the assistant header is left out');
  // chat_template_kwargs are the template's variables, merged last.
  const viaKwargs = (await post('/tokenize', {
    model, messages, chat_template_kwargs: { add_generation_prompt: false },
  })).json.tokens;
  assert.deepEqual(viaKwargs, without);
  // continue_final_message: the prompt ends with the last message's text, no end of turn.
  const cont = await post('/tokenize', {
    model, messages: [...messages, { role: 'assistant', content: 'Free software is' }],
    add_generation_prompt: false, continue_final_message: true,
  });
  assert.equal(cont.status, 200);
  assert.ok((await detokenize(cont.json.tokens)).endsWith('Free software is'));
  const both = await post('/tokenize', { model, messages, continue_final_message: true });
  assert.equal(both.status, 400);
  const c = await client.chat.completions.create({
    model, messages: [...messages, { role: 'assistant', content: 'Free software is' }],
    add_generation_prompt: false, continue_final_message: true, max_tokens: 4, temperature: 0,
    ignore_eos: true,
  });
  assert.equal(c.usage.prompt_tokens, cont.json.tokens.length);
});

// Greedy token ids of the prompt's continuation, to pick stop tokens from.
let greedyIds = [];
await check('return_token_ids', async () => {
  const c = await client.completions.create({
    model, prompt, max_tokens: 12, temperature: 0, ignore_eos: true, return_token_ids: true,
  });
  greedyIds = c.choices[0].token_ids;
  assert.equal(greedyIds.length, 12);
  assert.ok(c.choices[0].prompt_token_ids.length > 0);
  assert.equal(c.choices[0].text, greedyText);
  // /detokenize keeps special tokens (as vLLM's); completions skip them by default.
  assert.equal((await detokenize(greedyIds)).replace(/<\|[a-z_]+\|>/g, ''), greedyText);
});

await check('stop_token_ids: stop_reason is the id, its text is left out unless asked for', async () => {
  let i = 2;
  while (greedyIds.slice(0, i).includes(greedyIds[i])) i++;
  const stopId = greedyIds[i];
  const body = { model, prompt, max_tokens: 12, temperature: 0, ignore_eos: true,
    stop_token_ids: [stopId], return_token_ids: true };
  const c = await client.completions.create(body);
  assert.equal(c.choices[0].finish_reason, 'stop');
  assert.equal(c.choices[0].stop_reason, stopId);
  assert.deepEqual(c.choices[0].token_ids, greedyIds.slice(0, i + 1));
  assert.equal(c.usage.completion_tokens, i + 1);
  assert.equal(c.choices[0].text, await detokenize(greedyIds.slice(0, i)));
  const inc = await client.completions.create({ ...body, include_stop_str_in_output: true });
  assert.equal(inc.choices[0].text, await detokenize(greedyIds.slice(0, i + 1)));
});

await check('stop strings: stop_reason names the string; include_stop_str_in_output', async () => {
  const stop = greedyText.slice(3, 6);
  const at = greedyText.indexOf(stop);
  const c = await client.completions.create({
    model, prompt, max_tokens: 12, temperature: 0, ignore_eos: true, stop: ['zzzz', stop],
  });
  assert.equal(c.choices[0].stop_reason, stop);
  assert.equal(c.choices[0].text, greedyText.slice(0, at));
  const inc = await client.completions.create({
    model, prompt, max_tokens: 12, temperature: 0, ignore_eos: true, stop,
    include_stop_str_in_output: true,
  });
  assert.equal(inc.choices[0].text, greedyText.slice(0, at + stop.length));
  // Chat, streamed: the same cut, and the final chunk says why.
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'What is free software?' }], max_tokens: 10,
    temperature: 0, stream: true, stop: chatText.slice(2, 4),
  });
  let text = '';
  let last = null;
  for await (const chunk of stream) {
    for (const ch of chunk.choices) {
      if (ch.delta.content) text += ch.delta.content;
      if (ch.finish_reason) last = ch;
    }
  }
  if (chatText.length >= 4) {
    assert.equal(text, chatText.slice(0, chatText.indexOf(chatText.slice(2, 4))));
    assert.equal(last.finish_reason, 'stop');
    assert.equal(last.stop_reason, chatText.slice(2, 4));
  }
});

await check('completions logprobs: k alternatives, cumulative text_offset, streamed the same', async () => {
  const body = { model, prompt, max_tokens: 8, temperature: 0, ignore_eos: true, logprobs: 2 };
  const c = await client.completions.create(body);
  const lp = c.choices[0].logprobs;
  assert.equal(lp.tokens.length, 8);
  assert.equal(lp.tokens.join(''), c.choices[0].text);
  for (let i = 0; i < 8; i++) {
    const top = lp.top_logprobs[i];
    assert.equal(Object.keys(top).length, 2, JSON.stringify(top));  // greedy: sampled is the best
    assert.equal(lp.token_logprobs[i], Math.max(...Object.values(top)));
    assert.ok(lp.token_logprobs[i] <= 0);
    if (i > 0) assert.equal(lp.text_offset[i], lp.text_offset[i - 1] + [...lp.tokens[i - 1]].length);
  }
  assert.equal(lp.text_offset[0], 0);
  const stream = await client.completions.create({ ...body, stream: true });
  const offsets = [];
  const values = [];
  for await (const chunk of stream) {
    for (const ch of chunk.choices) {
      if (ch.logprobs) { offsets.push(...ch.logprobs.text_offset); values.push(...ch.logprobs.token_logprobs); }
    }
  }
  assert.deepEqual(offsets, lp.text_offset);
  assert.deepEqual(values, lp.token_logprobs);
  // With echo the offsets start after the prompt.
  const e = await client.completions.create({ ...body, echo: true });
  assert.equal(e.choices[0].text, prompt + c.choices[0].text);
  assert.equal(e.choices[0].logprobs.text_offset[0], [...prompt].length);
});

await check('chat logprobs with top_logprobs', async () => {
  const c = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'What is free software?' }], max_tokens: 6,
    temperature: 0, logprobs: true, top_logprobs: 3,
  });
  const content = c.choices[0].logprobs.content;
  assert.ok(content.length > 0);
  for (const t of content) {
    assert.equal(t.top_logprobs.length, 3);
    assert.equal(t.top_logprobs[0].logprob, t.logprob);
    assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
    assert.ok(Array.isArray(t.bytes));
  }
});

await check('completions streamed with echo', async () => {
  const stream = await client.completions.create({
    model, prompt, max_tokens: 12, temperature: 0, ignore_eos: true, echo: true, stream: true,
  });
  let text = '';
  for await (const chunk of stream) for (const ch of chunk.choices) text += ch.text;
  assert.equal(text, prompt + greedyText);
});

await check('chat streamed: n = 2, include_usage last, prompt_token_ids first', async () => {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'What is free software?' }], max_tokens: 6, n: 2,
    temperature: 1, seed: 3, stream: true, stream_options: { include_usage: true },
    return_token_ids: true, ignore_eos: true,
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const roles = chunks.filter((c) => c.choices.length && c.choices[0].delta.role === 'assistant');
  assert.deepEqual(roles.map((c) => c.choices[0].index).sort(), [0, 1]);
  for (const r of roles) assert.ok(r.prompt_token_ids.length > 0, 'prompt_token_ids on the first chunk');
  const finals = chunks.filter((c) => c.choices.length && c.choices[0].finish_reason);
  assert.deepEqual(finals.map((c) => c.choices[0].index).sort(), [0, 1]);
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 12);
  assert.ok(chunks.indexOf(finals[finals.length - 1]) < chunks.length - 1);
});

await check('max_completion_tokens wins over max_tokens; chat default is the context left', async () => {
  const c = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 9, max_completion_tokens: 3,
    temperature: 0, ignore_eos: true,
  });
  assert.equal(c.usage.completion_tokens, 3);
  const d = await client.completions.create({ model, prompt, temperature: 0, ignore_eos: true });
  assert.equal(d.usage.completion_tokens, 16);
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
