// Node SDK conformance, Chat Completions and models: the official `openai` npm package, pointed
// at fikra-gateway by changing only its base URL, gets unary and streamed completions and the
// model list exactly as from api.openai.com, each billed to the nano-dollar.
//
// Each test states its goal in a comment. The server side of every claim is checked too:
// balances and ledgers through the admin API (BigInt nano-USD), and "how many times did the SDK
// send it" through `fikra_requests_total` on /metrics, read before and after the call.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { errorCase } from './error_cases.mjs';
import { Gateway, SDK_TIMEOUT_MS, makeTenant, nanosToUsd, stopChecked, usdToNanos } from './harness.mjs';
import {
  CHAT,
  MESSAGES,
  MODEL,
  SANDBOX_OUTPUT_TOKENS,
  SIGNUP_NANOS,
  UNVERIFIED_RPM,
  UNVERIFIED_TPM,
  assertRateHeaders,
  expectCase,
  flashCost,
} from './checks.mjs';

// SPEC §3's reference registry: id -> [input, output] USD per 1M tokens.
const REFERENCE_REGISTRY = {
  'fikra-flash': ['0.5', '0.5'],
  'fikra-fast-8b': ['0.5', '0.5'],
  'fikra-pro-20b': ['2.0', '2.0'],
  'fikra-pro-120b': ['3.0', '3.0'],
  'fikra-qwen-max': ['5.0', '5.0'],
  'fikra-auto': ['2.0', '2.0'],
  'fikra-auto-pro': ['5.0', '5.0'],
};

let gateway;
before(async () => {
  gateway = await new Gateway().start();
});
after(() => stopChecked(gateway));

// Goal: a unary completion returns the public model id, consistent usage and content; the wallet
// drops by exactly (prompt + completion) x 500 nano-USD; the ledger holds one `completed` record
// with that cost whose request id is the x-request-id; the seven rate headers are present,
// canonical, and show one request taken from a full bucket.
test('unary completion is billed exactly and ledgered', async () => {
  const tenant = await makeTenant(gateway);
  const before = await tenant.account();
  assert.deepEqual([before.balance_usd, before.held_usd, before.tier], ['1.000000000', '0.000000000', 'unverified']);
  const { result, diff } = await gateway.counting(() =>
    tenant.client().chat.completions.create({ model: MODEL, messages: MESSAGES }).withResponse(),
  );
  const { data: completion, response: raw } = result;
  assert.deepEqual(diff, { [`${CHAT} 200`]: 1 });
  assert.equal(raw.status, 200);
  assert.equal(raw.headers.get('content-type'), 'application/json');
  assert.equal(completion.object, 'chat.completion');
  assert.equal(completion.model, MODEL);
  assert.equal(completion._request_id, raw.headers.get('x-request-id'));
  assert.equal(completion.choices.length, 1);
  const [choice] = completion.choices;
  assert.deepEqual([choice.index, choice.message.role, choice.finish_reason], [0, 'assistant', 'stop']);
  assert.equal(choice.message.content.split(' ').length, SANDBOX_OUTPUT_TOKENS);
  const usage = completion.usage;
  assert.ok(usage.prompt_tokens > 0, JSON.stringify(usage));
  assert.equal(usage.completion_tokens, SANDBOX_OUTPUT_TOKENS);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);

  const rates = assertRateHeaders(raw.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
  assert.equal(rates.remainingRequests, UNVERIFIED_RPM - 1);
  // One request out of a 30/min bucket refills in exactly 2 s.
  assert.equal(rates.resetRequestsMs, 2000);
  // TPM is charged at admission with at least the content bytes plus the 8192-token output cap.
  const contentBytes = Buffer.byteLength(MESSAGES[0].content);
  assert.ok(rates.remainingTokens <= UNVERIFIED_TPM - contentBytes - 8192, JSON.stringify(rates));

  const cost = flashCost(usage.prompt_tokens, usage.completion_tokens);
  const settled = await gateway.settledAccount(tenant.accountId);
  assert.equal(settled.held_usd, '0.000000000');
  assert.equal(usdToNanos(before.balance_usd) - usdToNanos(settled.balance_usd), cost);
  assert.equal(settled.balance_usd, nanosToUsd(SIGNUP_NANOS - cost));
  const records = await gateway.usageRecords(tenant.accountId, 1);
  assert.equal(records.length, 1, JSON.stringify(records));
  const [record] = records;
  assert.equal(record.request_id, raw.headers.get('x-request-id'));
  assert.equal(record.key_id, tenant.keyId);
  assert.equal(record.model, MODEL);
  assert.deepEqual([record.prompt_tokens, record.completion_tokens], [usage.prompt_tokens, usage.completion_tokens]);
  assert.equal(record.cost_usd, nanosToUsd(cost));
  assert.equal(record.outcome, 'completed');
  assert.ok(Number.isInteger(record.created_at) && Math.abs(record.created_at - Date.now() / 1000) < 120, JSON.stringify(record));
});

// Goal: a stream delivers the same text as the unary answer to the same prompt (the sandbox is
// deterministic), one chunk per token; with stream_options.include_usage the last chunk (and
// only it) carries usage equal to the unary usage and has no choices; without it no chunk does.
// All three requests are billed at exactly the same cost.
test('streaming matches unary and carries usage only on request', async () => {
  const tenant = await makeTenant(gateway);
  const client = tenant.client();
  const unary = await client.chat.completions.create({ model: MODEL, messages: MESSAGES });
  const expectedText = unary.choices[0].message.content;

  const { data: stream, response: raw } = await client.chat.completions
    .create({ model: MODEL, messages: MESSAGES, stream: true, stream_options: { include_usage: true } })
    .withResponse();
  assert.ok(raw.headers.get('content-type').startsWith('text/event-stream'), raw.headers.get('content-type'));
  assertRateHeaders(raw.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
  const streamRequestId = raw.headers.get('x-request-id');
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.deepEqual(new Set(chunks.map((chunk) => chunk.object)), new Set(['chat.completion.chunk']));
  assert.deepEqual(new Set(chunks.map((chunk) => chunk.model)), new Set([MODEL]));
  assert.equal(new Set(chunks.map((chunk) => chunk.id)).size, 1);
  const contentChunks = chunks.filter((chunk) => chunk.choices.length && chunk.choices[0].delta.content);
  assert.equal(contentChunks.length, SANDBOX_OUTPUT_TOKENS);
  assert.equal(contentChunks.map((chunk) => chunk.choices[0].delta.content).join(''), expectedText);
  const finishReasons = chunks.flatMap((chunk) => chunk.choices.map((c) => c.finish_reason).filter(Boolean));
  assert.deepEqual(finishReasons, ['stop']);
  const withUsage = chunks.flatMap((chunk, index) => (chunk.usage ? [index] : []));
  assert.deepEqual(withUsage, [chunks.length - 1]);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.deepEqual(
    [last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens],
    [unary.usage.prompt_tokens, unary.usage.completion_tokens, unary.usage.total_tokens],
  );

  const plain = [];
  for await (const chunk of await client.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true })) {
    plain.push(chunk);
  }
  assert.deepEqual(plain.filter((chunk) => chunk.usage), []);
  assert.equal(plain.map((chunk) => chunk.choices[0]?.delta.content ?? '').join(''), expectedText);

  const cost = flashCost(unary.usage.prompt_tokens, unary.usage.completion_tokens);
  const records = await gateway.usageRecords(tenant.accountId, 3);
  assert.deepEqual(
    records.map((r) => [r.cost_usd, r.outcome, r.model]),
    Array(3).fill([nanosToUsd(cost), 'completed', MODEL]),
  );
  assert.equal(records[1].request_id, streamRequestId); // newest first
  const settled = await gateway.settledAccount(tenant.accountId);
  assert.equal(settled.held_usd, '0.000000000');
  assert.equal(settled.balance_usd, nanosToUsd(SIGNUP_NANOS - 3n * cost));
});

// Goal: models.list() returns exactly the seven reference models with their prices;
// models.retrieve() the same entry; an unknown id throws NotFoundError (404, model_not_found,
// param "model") after exactly one request.
test('models list and retrieve', async () => {
  const tenant = await makeTenant(gateway);
  const client = tenant.client();
  const { result, diff } = await gateway.counting(() => client.models.list().withResponse());
  assert.deepEqual(diff, { '/v1/models 200': 1 });
  assertRateHeaders(result.response.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
  const models = [];
  for await (const model of result.data) models.push(model);
  assert.deepEqual(models.map((model) => model.id).sort(), Object.keys(REFERENCE_REGISTRY).sort());
  for (const model of models) {
    assert.deepEqual(Object.keys(model).sort(), ['created', 'id', 'object', 'owned_by', 'pricing']);
    assert.deepEqual([model.object, model.owned_by], ['model', 'fikra']);
    assert.ok(Number.isInteger(model.created));
    assert.deepEqual(Object.keys(model.pricing).sort(), ['input', 'output', 'unit']);
    assert.equal(model.pricing.unit, 'USD_PER_1M_TOKENS');
    const [input, output] = REFERENCE_REGISTRY[model.id];
    // Compared as exact decimals, whatever their JSON spelling.
    const prices = [model.pricing.input, model.pricing.output].map((price) => usdToNanos(String(price)));
    assert.deepEqual(prices, [usdToNanos(input), usdToNanos(output)], model.id);
  }
  const { result: flash, diff: retrieved } = await gateway.counting(() => client.models.retrieve(MODEL));
  assert.deepEqual(retrieved, { '/v1/models/{id} 200': 1 });
  assert.deepEqual({ ...flash }, models.find((model) => model.id === MODEL));

  const unknown = errorCase('retrieve_unknown_model');
  assert.equal(unknown.route, '/v1/models/{id}');
  await expectCase(gateway, unknown, client, tenant.key);
});

// Goal: the [[account_overrides]] entry for account "bulk" replaces its tier's limits, and the
// rate headers report the override (100000 RPM, 100000000 TPM).
test('account override limits show in the headers', async () => {
  await gateway.createAccount({ accountId: 'bulk' });
  const { key } = await gateway.createKey('bulk');
  const client = new OpenAI({ baseURL: gateway.baseURL, apiKey: key, timeout: SDK_TIMEOUT_MS });
  const { data, response } = await client.chat.completions.create({ model: MODEL, messages: MESSAGES }).withResponse();
  assert.equal(data.model, MODEL);
  const rates = assertRateHeaders(response.headers, { limitRequests: 100000, limitTokens: 100000000 });
  assert.equal(rates.remainingRequests, 100000 - 1);
});
