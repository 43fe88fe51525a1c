// Node SDK conformance, Responses API: the official `openai` npm package's
// `client.responses.create(...)`, pointed at fikra-gateway by its base URL, gets Response
// objects and typed streamed events (translated from the sandbox's chat answers), billed to the
// nano-dollar, with a wallet-lowered cap announced in x-fikra-max-tokens-clamped; its refusals
// throw the SDK's own error classes with `code` and `param`.
//
// Each test states its goal in a comment; balances and ledgers are checked through the admin API.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AuthenticationError, BadRequestError } from 'openai';
import { Gateway, makeTenant, nanosToUsd, stopChecked, usdToNanos } from './harness.mjs';
import {
  MODEL,
  PROMPT,
  RESPONSES,
  SANDBOX_OUTPUT_TOKENS,
  SIGNUP_NANOS,
  UNVERIFIED_RPM,
  UNVERIFIED_TPM,
  assertRateHeaders,
  flashCost,
} from './checks.mjs';

// The sandbox counts ceil(30 content bytes / 4) + 4 per message + 3 prompt tokens for PROMPT.
const PROMPT_INPUT_TOKENS = 8 + 4 + 3;
// The event sequence of one message answer of n deltas (SPEC §8.1).
function expectedEventTypes(deltas, terminal) {
  return [
    'response.created',
    'response.in_progress',
    'response.output_item.added',
    'response.content_part.added',
    ...Array(deltas).fill('response.output_text.delta'),
    'response.output_text.done',
    'response.content_part.done',
    'response.output_item.done',
    terminal,
  ];
}

/** The Responses usage object of a sandbox answer (it reports no cached or reasoning tokens). */
function sandboxUsage(inputTokens, outputTokens) {
  return {
    input_tokens: inputTokens,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: outputTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: inputTokens + outputTokens,
  };
}

let gateway;
before(async () => {
  gateway = await new Gateway().start();
});
after(() => stopChecked(gateway));

async function assertChargedOnce(tenant, costNanos, requestId) {
  const account = await gateway.settledAccount(tenant.accountId);
  assert.equal(account.held_usd, '0.000000000');
  assert.equal(account.balance_usd, nanosToUsd(SIGNUP_NANOS - costNanos));
  const records = await gateway.usageRecords(tenant.accountId, 1);
  assert.equal(records.length, 1, JSON.stringify(records));
  assert.equal(records[0].request_id, requestId);
  assert.equal(records[0].cost_usd, nanosToUsd(costNanos));
  assert.equal(records[0].outcome, 'completed');
  assert.equal(records[0].model, MODEL);
}

// Goal: the SDK's first example, `responses.create({model, input})`, returns a completed Response
// whose `output_text` is the sandbox's answer, whose usage adds up, whose id is `resp_` + the
// request id, with the seven rate headers; its cost is charged exactly once, nothing left held.
test('unary response has output_text, exact usage and an exact charge', async () => {
  const tenant = await makeTenant(gateway);
  const { result, diff } = await gateway.counting(() =>
    tenant.client().responses.create({ model: MODEL, input: PROMPT }).withResponse(),
  );
  const { data: response, response: raw } = result;
  assert.deepEqual(diff, { [`${RESPONSES} 200`]: 1 });
  assert.equal(raw.status, 200);
  assert.equal(raw.headers.get('content-type'), 'application/json');
  assert.equal(raw.headers.get('x-fikra-max-tokens-clamped'), null);
  const requestId = raw.headers.get('x-request-id');
  assert.equal(response._request_id, requestId);
  const rates = assertRateHeaders(raw.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
  assert.equal(rates.remainingRequests, UNVERIFIED_RPM - 1);
  assert.equal(response.id, `resp_${requestId}`);
  assert.equal(response.object, 'response');
  assert.equal(response.status, 'completed');
  assert.equal(response.incomplete_details, null);
  assert.equal(response.model, MODEL);
  assert.equal(response.output.length, 1);
  const [message] = response.output;
  assert.deepEqual([message.type, message.role, message.status], ['message', 'assistant', 'completed']);
  assert.equal(message.content.length, 1);
  assert.equal(message.content[0].type, 'output_text');
  assert.equal(response.output_text, message.content[0].text);
  assert.equal(response.output_text.split(' ').length, SANDBOX_OUTPUT_TOKENS);
  assert.deepEqual(response.usage, sandboxUsage(PROMPT_INPUT_TOKENS, SANDBOX_OUTPUT_TOKENS));
  await assertChargedOnce(tenant, flashCost(PROMPT_INPUT_TOKENS, SANDBOX_OUTPUT_TOKENS), requestId);
});

// Goal: instructions plus a message item with input_text parts and a max_output_tokens below the
// sandbox's length: an `incomplete` Response, reason `max_output_tokens`, 5 output tokens, the
// instructions and the cap echoed; the client's own cap is not a clamp, so no header.
test('instructions and message items with a cap give an incomplete response', async () => {
  const tenant = await makeTenant(gateway);
  const { data: response, response: raw } = await tenant
    .client()
    .responses.create({
      model: MODEL,
      instructions: 'Be brief.',
      input: [{ role: 'user', content: [{ type: 'input_text', text: PROMPT }] }],
      max_output_tokens: 5,
    })
    .withResponse();
  assert.equal(raw.headers.get('x-fikra-max-tokens-clamped'), null);
  assert.equal(response.status, 'incomplete');
  assert.deepEqual(response.incomplete_details, { reason: 'max_output_tokens' });
  assert.equal(response.max_output_tokens, 5);
  // The instructions' system message counts too: more input than PROMPT alone.
  const inputTokens = response.usage.input_tokens;
  assert.ok(inputTokens > PROMPT_INPUT_TOKENS, String(inputTokens));
  assert.deepEqual(response.usage, sandboxUsage(inputTokens, 5));
  assert.equal(response.output_text.split(' ').length, 5);
  assert.equal(response.instructions, 'Be brief.');
  const cost = flashCost(inputTokens, 5);
  const [record] = await gateway.usageRecords(tenant.accountId, 1);
  assert.deepEqual([record.prompt_tokens, record.completion_tokens, record.cost_usd], [inputTokens, 5, nanosToUsd(cost)]);
  const account = await gateway.settledAccount(tenant.accountId);
  assert.equal(account.balance_usd, nanosToUsd(SIGNUP_NANOS - cost));
});

// Goal: `stream: true` yields the typed events in SPEC order with sequence numbers counting from
// 0; every delta names the one item and part; the deltas join into the text of
// response.output_text.done and of the final Response; the last event is response.completed
// carrying usage, which is what the wallet paid, exactly.
test('stream yields typed events in order ending in response.completed', async () => {
  const tenant = await makeTenant(gateway);
  const { data: stream, response: raw } = await tenant
    .client()
    .responses.create({ model: MODEL, input: PROMPT, stream: true })
    .withResponse();
  assert.ok(raw.headers.get('content-type').startsWith('text/event-stream'), raw.headers.get('content-type'));
  assertRateHeaders(raw.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
  const requestId = raw.headers.get('x-request-id');
  const events = [];
  for await (const event of stream) events.push(event);
  assert.deepEqual(
    events.map((event) => event.type),
    expectedEventTypes(SANDBOX_OUTPUT_TOKENS, 'response.completed'),
  );
  assert.deepEqual(
    events.map((event) => event.sequence_number),
    events.map((_, index) => index),
  );
  const created = events[0].response;
  assert.deepEqual([created.id, created.status, created.model], [`resp_${requestId}`, 'in_progress', MODEL]);
  const added = events[2].item;
  const deltas = events.filter((event) => event.type === 'response.output_text.delta');
  for (const delta of deltas) {
    assert.deepEqual([delta.item_id, delta.output_index, delta.content_index], [added.id, 0, 0]);
  }
  const text = deltas.map((event) => event.delta).join('');
  assert.equal(text.split(' ').length, SANDBOX_OUTPUT_TOKENS);
  const done = events.find((event) => event.type === 'response.output_text.done');
  assert.equal(done.text, text);
  const final = events.at(-1).response;
  assert.deepEqual([final.id, final.status, final.model], [`resp_${requestId}`, 'completed', MODEL]);
  assert.equal(final.output[0].content[0].text, text);
  // A stream's terminal usage also says what was charged (SPEC §8.2).
  const streamedCost = nanosToUsd(flashCost(PROMPT_INPUT_TOKENS, SANDBOX_OUTPUT_TOKENS));
  assert.deepEqual(final.usage, {
    ...sandboxUsage(PROMPT_INPUT_TOKENS, SANDBOX_OUTPUT_TOKENS),
    cost_usd: streamedCost,
  });
  await assertChargedOnce(tenant, flashCost(PROMPT_INPUT_TOKENS, SANDBOX_OUTPUT_TOKENS), requestId);
});

/** What the cheapest answer (one output token) to `body` costs, in BigInt nano-USD, as the 402 of
 * an account that cannot pay it says: (input bound + 1) x 500 for fikra-flash. */
async function minimalAnswerNanos(body) {
  const poor = await makeTenant(gateway, { signupCreditUsd: '0.000000001' });
  const error = await poor
    .client({ maxRetries: 0 })
    .responses.create(body)
    .then(() => assert.fail('a 1 nano-USD wallet was served'), (thrown) => thrown);
  assert.deepEqual([error.status, error.code], [402, 'insufficient_quota']);
  const match = /this request needs at least (\d+\.\d{9}) USD/.exec(error.message);
  assert.ok(match, error.message);
  return usdToNanos(match[1]);
}

// Goal: a wallet that cannot pay the model's whole output cap gets a lowered cap, announced in
// x-fikra-max-tokens-clamped and visible as `status: "incomplete"`. The Node SDK sends
// {"model":"fikra-flash","input":"hi"}; the gateway holds 62 input tokens for it, so a
// one-token answer needs 63 x 500 = 31,500 nano-USD and 33,500 nano-USD leave exactly 5 output
// tokens. The sandbox then reports 8 input + 5 output tokens: 6,500 nano-USD charged.
test('a cap lowered by the wallet is announced and the response is incomplete', async () => {
  const body = { model: MODEL, input: 'hi' };
  assert.equal(await minimalAnswerNanos(body), 31_500n);
  const tenant = await makeTenant(gateway, { signupCreditUsd: nanosToUsd(33_500n) });
  const { data: response, response: raw } = await tenant.client().responses.create(body).withResponse();
  assert.equal(raw.headers.get('x-fikra-max-tokens-clamped'), '5');
  assert.equal(response.status, 'incomplete');
  assert.deepEqual(response.incomplete_details, { reason: 'max_output_tokens' });
  assert.deepEqual(response.usage, sandboxUsage(8, 5));
  assert.equal(response.output_text.split(' ').length, 5);
  const account = await gateway.settledAccount(tenant.accountId);
  assert.deepEqual([account.balance_usd, account.held_usd], [nanosToUsd(33_500n - flashCost(8, 5)), '0.000000000']);
});

// Goal: streamed, and asking for more (max_output_tokens 100) than the wallet pays, the clamp
// header comes with the stream's head and the stream ends in response.incomplete after exactly
// the announced number of deltas: a wallet of the cheapest answer plus 4 tokens gets 5.
test('a streamed request asking for more than it can pay ends in response.incomplete', async () => {
  const body = { model: MODEL, input: 'hi', max_output_tokens: 100, stream: true };
  const wallet = (await minimalAnswerNanos(body)) + 4n * 500n;
  const tenant = await makeTenant(gateway, { signupCreditUsd: nanosToUsd(wallet) });
  const { data: stream, response: raw } = await tenant.client().responses.create(body).withResponse();
  assert.equal(raw.headers.get('x-fikra-max-tokens-clamped'), '5');
  const events = [];
  for await (const event of stream) events.push(event);
  assert.deepEqual(
    events.map((event) => event.type),
    expectedEventTypes(5, 'response.incomplete'),
  );
  const final = events.at(-1).response;
  assert.equal(final.status, 'incomplete');
  assert.deepEqual(final.incomplete_details, { reason: 'max_output_tokens' });
  assert.deepEqual(final.usage, { ...sandboxUsage(8, 5), cost_usd: nanosToUsd(flashCost(8, 5)) });
  const account = await gateway.settledAccount(tenant.accountId);
  assert.deepEqual([account.balance_usd, account.held_usd], [nanosToUsd(wallet - flashCost(8, 5)), '0.000000000']);
});

// Goal: a test key gets the same kind of Response and its wallet never moves.
test('a test key is served by the sandbox for free', async () => {
  const tenant = await makeTenant(gateway, { kind: 'test' });
  const response = await tenant.client().responses.create({ model: MODEL, input: PROMPT });
  assert.equal(response.status, 'completed');
  assert.equal(response.output_text.split(' ').length, SANDBOX_OUTPUT_TOKENS);
  const account = await gateway.settledAccount(tenant.accountId);
  assert.equal(account.balance_usd, '1.000000000');
  assert.equal((await gateway.usageRecords(tenant.accountId, 1))[0].cost_usd, '0.000000000');
});

// Goal: what the gateway cannot honour (it stores nothing, hosts no tools) throws
// BadRequestError with code unsupported_parameter and the exact param, sent once, free.
for (const [options, param] of [
  [{ previous_response_id: 'resp_123' }, 'previous_response_id'],
  [{ conversation: 'conv_123' }, 'conversation'],
  [{ background: true }, 'background'],
  [{ tools: [{ type: 'web_search' }] }, 'tools[0]'],
]) {
  test(`unsupported parameter ${param} throws BadRequestError`, async () => {
    const tenant = await makeTenant(gateway);
    const { result: error, diff } = await gateway.counting(() =>
      tenant
        .client()
        .responses.create({ model: MODEL, input: PROMPT, ...options })
        .then(() => assert.fail('the SDK call succeeded'), (thrown) => thrown),
    );
    assert.deepEqual(diff, { [`${RESPONSES} 400`]: 1 });
    assert.equal(error.constructor, BadRequestError);
    assert.deepEqual([error.status, error.type, error.code, error.param], [400, 'invalid_request_error', 'unsupported_parameter', param]);
    const account = await gateway.settledAccount(tenant.accountId);
    assert.equal(account.balance_usd, '1.000000000');
  });
}

// Goal: an unknown model is a BadRequestError model_not_found on `model`; an invalid cap a
// BadRequestError invalid_parameter on `max_output_tokens`; a bad key an AuthenticationError.
test('errors use the SDK classes', async () => {
  const tenant = await makeTenant(gateway);
  const client = tenant.client({ maxRetries: 0 });
  await assert.rejects(client.responses.create({ model: 'fikra-flsh', input: PROMPT }), (error) => {
    assert.equal(error.constructor, BadRequestError);
    assert.deepEqual([error.code, error.param], ['model_not_found', 'model']);
    return true;
  });
  await assert.rejects(client.responses.create({ model: MODEL, input: PROMPT, max_output_tokens: 0 }), (error) => {
    assert.equal(error.constructor, BadRequestError);
    assert.deepEqual([error.code, error.param], ['invalid_parameter', 'max_output_tokens']);
    return true;
  });
  const stranger = tenant.client({ key: `fk_live_${'0'.repeat(32)}`, maxRetries: 0 });
  await assert.rejects(stranger.responses.create({ model: MODEL, input: PROMPT }), (error) => {
    assert.equal(error.constructor, AuthenticationError);
    assert.equal(error.code, 'invalid_api_key');
    return true;
  });
  assert.equal(usdToNanos((await tenant.account()).balance_usd), SIGNUP_NANOS);
});
