// Robustness of `tierserve serve` on loopback: 200 requests at concurrency 50, where a third of
// the clients disconnect midway through a streamed generation, a third send malformed or
// oversized requests, and the rest must complete correctly. Afterwards the server still answers,
// no request is left running, and the KV cache is empty again (vllm:kv_cache_usage_perc 0).
// Usage: node serve_robustness_test.mjs BASE_URL API_KEY   (BASE_URL without /v1)
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';

const [baseURL, apiKey] = process.argv.slice(2);
const url = new URL(baseURL);
const auth = { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' };
const prompt = 'This program is free software; you can redistribute it';

function request(method, path, body, headers = auth) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, method, path, headers }, (res) => {
      let data = '';
      res.on('data', (d) => { data += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: data }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// A streamed completion whose client goes away after the first event.
function disconnecting(i) {
  return new Promise((resolve) => {
    const body = JSON.stringify({ model: 'demo', prompt: `${prompt} ${i}`, max_tokens: 200,
                                  ignore_eos: true, stream: true });
    const req = http.request({ host: url.hostname, port: url.port, method: 'POST',
                               path: '/v1/completions', headers: auth }, (res) => {
      res.once('data', () => { req.destroy(); resolve('disconnected'); });
      res.on('error', () => resolve('disconnected'));
    });
    req.on('error', () => resolve('disconnected'));
    req.write(body);
    req.end();
  });
}

// Raw bytes that are not a valid request, or a body over the limit.
function malformed(i) {
  const kinds = [
    'GARBAGE\r\n\r\n',
    'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n',
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{"prompt": [',
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\n` +
        `Content-Length: ${64 << 20}\r\n\r\n` + 'x'.repeat(1 << 16),
  ];
  return new Promise((resolve) => {
    const s = net.connect(Number(url.port), url.hostname, () => s.write(kinds[i % kinds.length]));
    let got = '';
    s.on('data', (d) => { got += d; });
    s.setTimeout(10000, () => s.destroy());
    s.on('close', () => resolve(got.split('\r\n')[0] || 'closed'));
    s.on('error', () => {});
    setTimeout(() => s.end(), 2000);
  });
}

async function good(i) {
  const body = JSON.stringify({ model: 'demo', prompt: `${prompt} ${i}`, max_tokens: 8,
                                temperature: 0, ignore_eos: true });
  const r = await request('POST', '/v1/completions', body);
  assert.equal(r.status, 200, r.body);
  const j = JSON.parse(r.body);
  assert.equal(j.usage.completion_tokens, 8);
  return 'ok';
}

const jobs = [];
for (let i = 0; i < 200; ++i) jobs.push(i);
const results = { ok: 0, disconnected: 0, malformed: 0 };
let next = 0;
async function worker() {
  while (next < jobs.length) {
    const i = next++;
    if (i % 3 === 0) {
      await disconnecting(i);
      results.disconnected++;
    } else if (i % 3 === 1) {
      const line = await malformed(i);
      assert.ok(!line.startsWith('HTTP/1.1 200'), `malformed request answered 200: ${line}`);
      results.malformed++;
    } else {
      await good(i);
      results.ok++;
    }
  }
}
await Promise.all(Array.from({ length: 50 }, worker));
console.log(JSON.stringify(results));
assert.equal(results.ok + results.disconnected + results.malformed, 200);

// Everything settles: nothing running, the KV cache empty, and the server still answers.
let metrics = '';
for (let attempt = 0; attempt < 100; ++attempt) {
  metrics = (await request('GET', '/metrics', undefined, {})).body;
  const running = /^vllm:num_requests_running\{[^}]*\} (\S+)$/m.exec(metrics);
  const usage = /^vllm:kv_cache_usage_perc\{[^}]*\} (\S+)$/m.exec(metrics);
  if (running && usage && Number(running[1]) === 0 && Number(usage[1]) === 0) break;
  await new Promise((r) => setTimeout(r, 100));
}
assert.match(metrics, /^vllm:num_requests_running\{[^}]*\} 0(\.0)?$/m, metrics);
assert.match(metrics, /^vllm:kv_cache_usage_perc\{[^}]*\} 0(\.0)?$/m);
// The disconnects were aborts, and every scheduled request had its queue time recorded.
const metric = (re) => { const m = re.exec(metrics); assert.ok(m, `${re} in\n${metrics}`); return Number(m[1]); };
assert.ok(metric(/^vllm:request_success_total\{[^}]*finished_reason="abort"[^}]*\} (\S+)$/m) >= 1);
assert.ok(metric(/^vllm:request_queue_time_seconds_count\{[^}]*\} (\S+)$/m) >= results.ok);
assert.ok(metric(/^vllm:e2e_request_latency_seconds_count\{[^}]*\} (\S+)$/m) >= results.ok);
assert.equal(await good(1000), 'ok');
console.log('robustness checks passed');
