// Node SDK conformance, errors: for each SPEC §2 row the official `openai` npm package meets, on
// Chat Completions and on the Responses API, the error class, its fields, the headers, and
// exactly how often the SDK sent the request (counted by the server's `fikra_requests_total`),
// including its retries and their waits.
//
// The cases (request and expected answer) are those of tests/cases/errors.json, which
// tests/api_errors.rs and the Python suite drive too; each test arranges a case's `given` and
// adds what only the SDK shows (retry timing, request ids, the rate headers' values).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { errorCase } from './error_cases.mjs';
import { Gateway, makeTenant, sleepMs, stopChecked, waitUntil } from './harness.mjs';
import {
  CHAT,
  MESSAGES,
  MODEL,
  UNVERIFIED_RPM,
  UNVERIFIED_TPM,
  assertRateHeaders,
  exhaustRpm,
  expectCase,
  rawChat,
} from './checks.mjs';

let gateway;
before(async () => {
  gateway = await new Gateway().start();
});
after(() => stopChecked(gateway));

/** The ordinary successful call of each API flavour. */
function create(client, api) {
  if (api === 'responses') return client.responses.create({ model: MODEL, input: MESSAGES });
  return client.chat.completions.create({ model: MODEL, messages: MESSAGES });
}

/** A fetch for the SDK that reports each attempt to `onRequest` before sending it and each
 * answer to `onResponse` (status, headers, when) once it arrives. */
function watchedFetch({ onRequest = async () => {}, onResponse = () => {} } = {}) {
  return async (url, init) => {
    await onRequest(new URL(url));
    const response = await fetch(url, init);
    onResponse({ at: performance.now(), status: response.status, headers: response.headers });
    return response;
  };
}

for (const api of ['chat', 'responses']) {
  const route = api === 'chat' ? CHAT : '/v1/responses';

  // Goal: a misspelt model is a 400 BadRequestError (model_not_found, param "model") whose
  // message suggests "fikra-flash"; not retried; the rate headers show nothing consumed.
  test(`${api}: 400 model_not_found suggests the closest id`, async () => {
    const tenant = await makeTenant(gateway);
    const kase = errorCase('model_not_found', api);
    const error = await expectCase(gateway, kase, kase.client(gateway, tenant.key), tenant.key);
    const rates = assertRateHeaders(error.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
    assert.deepEqual([rates.remainingRequests, rates.remainingTokens], [UNVERIFIED_RPM, UNVERIFIED_TPM]);
  });

  // Goal: temperature 3.5 (allowed 0.0-2.0) is a 400 BadRequestError, invalid_parameter, param
  // "temperature", sent exactly once.
  test(`${api}: 400 invalid temperature`, async () => {
    const tenant = await makeTenant(gateway);
    const kase = errorCase('temperature_out_of_range', api);
    assert.equal(kase.body.temperature, 3.5);
    const error = await expectCase(gateway, kase, kase.client(gateway, tenant.key), tenant.key);
    assertRateHeaders(error.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
  });

  // Goal: a request without `messages` (Responses: without `input`) is a 400 BadRequestError,
  // missing_required_parameter naming it, sent exactly once.
  test(`${api}: 400 missing ${api === 'chat' ? 'messages' : 'input'}`, async () => {
    const tenant = await makeTenant(gateway);
    const kase = errorCase('missing_messages', api);
    assert.deepEqual(Object.keys(kase.body), ['model']);
    assert.equal(kase.param, api === 'chat' ? 'messages' : 'input');
    const error = await expectCase(gateway, kase, kase.client(gateway, tenant.key), tenant.key);
    assertRateHeaders(error.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
  });

  // Goal: a well-formed unknown live key and an OpenAI-style "sk-proj-..." key are each a 401
  // AuthenticationError (invalid_api_key, param null), not retried, never echoed.
  test(`${api}: 401 unknown and foreign keys`, async () => {
    for (const [name, prefix] of [['unknown_live_key', 'fk_live_'], ['foreign_key', 'sk-proj-']]) {
      const kase = errorCase(name, api);
      const key = kase.keySent('');
      assert.ok(key.startsWith(prefix) && key.length === 40, key);
      await expectCase(gateway, kase, kase.client(gateway, key), key);
    }
  });

  // Goal: a key that worked and was then revoked is a 401 AuthenticationError with code
  // revoked_api_key (revocation takes effect within 1 s), sent exactly once.
  test(`${api}: 401 revoked key`, async () => {
    const tenant = await makeTenant(gateway);
    const kase = errorCase('revoked_key', api);
    const client = kase.client(gateway, tenant.key);
    assert.equal((await create(client, api)).model, MODEL);
    assert.equal((await gateway.revokeKey(tenant.keyId)).key_id, tenant.keyId);
    // Within 1 s every worker refuses the key (a bounded poll, before the counted SDK call).
    const refused = async () => {
      const response = await rawChat(gateway, tenant.key);
      await response.text();
      return response.status === 401;
    };
    assert.ok(await waitUntil(1000, refused), 'the revoked key was still served 1 s after its revocation');
    await expectCase(gateway, kase, client, tenant.key);
  });

  // Goal: an account with 0.000001 USD cannot pay a minimal answer: 402 billing_error /
  // insufficient_quota, which openai-node throws as a plain APIError (no subclass); the answer
  // says x-should-retry: false so the SDK sends it once; the message gives the balance and says
  // to top up by M-Pesa or card; nothing is held, charged or ledgered.
  test(`${api}: 402 insufficient_quota is a plain APIError`, async () => {
    const poor = await makeTenant(gateway, { signupCreditUsd: '0.000001' });
    assert.equal((await poor.account()).balance_usd, '0.000001000');
    const kase = errorCase('insufficient_quota', api);
    const error = await expectCase(gateway, kase, kase.client(gateway, poor.key), poor.key);
    assertRateHeaders(error.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
    assert.ok(error.error.message.includes('0.000001'), error.error.message);
    const account = await poor.account();
    assert.deepEqual([account.balance_usd, account.held_usd], ['0.000001000', '0.000000000']);
    assert.deepEqual(await gateway.usage(poor.accountId), []);
  });

  // Goal: a client whose base URL lacks /v1 gets a 404 NotFoundError (unknown_endpoint) whose
  // message points at the missing '/v1', sent exactly once.
  test(`${api}: 404 base URL without /v1`, async () => {
    const tenant = await makeTenant(gateway);
    const kase = errorCase('missing_v1_prefix', api);
    const client = kase.client(gateway, tenant.key);
    assert.equal(client.baseURL, gateway.rootURL);
    await expectCase(gateway, kase, client, tenant.key);
  });

  // Goal: after 30 quick requests an unverified account's 31st is a 429 RateLimitError
  // (rate_limit_exceeded) with the SPEC message, retry-after / retry-after-ms that agree,
  // x-should-retry: true and no requests left (maxRetries 0: sent once).
  test(`${api}: 429 RPM exhausted, headers and message`, async () => {
    const tenant = await makeTenant(gateway);
    await exhaustRpm(gateway, tenant.key);
    const kase = errorCase('rpm_exhausted', api);
    const error = await expectCase(gateway, kase, kase.client(gateway, tenant.key, { maxRetries: 0 }), tenant.key);
    const retryAfterMs = Number(error.headers.get('retry-after-ms'));
    assert.ok(retryAfterMs >= 1 && retryAfterMs <= 2000, String(retryAfterMs));
    assert.equal(error.headers.get('retry-after'), String(Math.min(60, Math.max(1, Math.ceil(retryAfterMs / 1000)))));
    const rates = assertRateHeaders(error.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
    assert.ok(rates.resetRequestsMs > 58_000, String(rates.resetRequestsMs)); // nearly a minute to refill 30
    const match =
      /^Rate limit reached for requests per min \(RPM\): Limit 30, Used 30, Requested 1\. Please try again in (\d+(?:\.\d{1,3})?)s\.$/.exec(
        error.error.message,
      );
    assert.ok(match, error.error.message);
    assert.equal(Math.round(Number(match[1]) * 1000), retryAfterMs);
  });

  // Goal: with the default client (2 retries) a 429 with x-should-retry: true is sent exactly
  // three times, each after waiting retry-after-ms, then RateLimitError is thrown. The bucket
  // refills one request every 2 s, so right before each retry a second key of the same account
  // takes the refilled request: each of the SDK's three attempts meets an empty bucket.
  test(`${api}: 429 the SDK retries exactly twice, then throws`, async () => {
    const tenant = await makeTenant(gateway);
    const drainKey = (await gateway.createKey(tenant.accountId)).key;
    await exhaustRpm(gateway, drainKey);
    const drained = { 200: 0, 429: 0 };
    const attempts = [];
    // Take every whole request the bucket holds until it answers 429 with >= 300 ms to wait.
    const emptyTheBucket = async () => {
      for (;;) {
        const response = await rawChat(gateway, drainKey);
        await response.text();
        drained[response.status] += 1;
        if (response.status === 429) {
          const waitMs = Number(response.headers.get('retry-after-ms'));
          if (waitMs >= 300) return;
          await sleepMs(waitMs); // the wait the server asked for
        }
      }
    };
    const onRequest = async (url) => {
      if (url.pathname === route) {
        attempts.push(performance.now());
        if (attempts.length > 1) await emptyTheBucket();
      }
    };
    const client = tenant.client({ fetch: watchedFetch({ onRequest }) });
    assert.equal(client.maxRetries, 2);
    const kase = errorCase('rpm_exhausted', api);
    const started = performance.now();
    const { result: error, diff } = await gateway.counting(() =>
      create(client, api).then(() => assert.fail('the SDK call succeeded'), (thrown) => thrown),
    );
    const elapsedMs = performance.now() - started;
    kase.check(error, tenant.key);
    assert.equal(attempts.length, 3, `the SDK sent ${attempts.length} attempts`);
    // The server saw the SDK's three 429s plus what the drain key sent, and nothing else.
    const expected = api === 'chat' ? { [`${CHAT} 429`]: 3 + drained[429] } : { [`${route} 429`]: 3, [`${CHAT} 429`]: drained[429] };
    if (drained[200]) expected[`${CHAT} 200`] = drained[200];
    assert.deepEqual(diff, expected, JSON.stringify(drained));
    // The second retry waited for a whole refill (about 2 s), as its 429's retry-after-ms asked.
    assert.ok(elapsedMs >= 1900, String(elapsedMs));
  });

  // Goal: retry-after-ms is the real time until the RPM bucket holds a request again (rounded
  // up): with the default client the 31st request gets one 429, the SDK waits exactly
  // retry-after-ms, and its first retry is admitted (server: one 429, one 200; the call works).
  test(`${api}: 429 retry-after is honest, so the first retry succeeds`, async () => {
    const tenant = await makeTenant(gateway);
    await exhaustRpm(gateway, tenant.key);
    const attempts = [];
    const answers = [];
    const client = tenant.client({
      fetch: watchedFetch({
        onRequest: async () => {
          attempts.push(performance.now());
        },
        onResponse: (answer) => answers.push(answer),
      }),
    });
    const { result, diff } = await gateway.counting(() => create(client, api));
    assert.equal(result.model, MODEL);
    assert.deepEqual(diff, { [`${route} 429`]: 1, [`${route} 200`]: 1 });
    assert.deepEqual(
      answers.map((answer) => answer.status),
      [429, 200],
    );
    const [first] = answers;
    assert.equal(first.headers.get('x-should-retry'), 'true');
    const waitMs = Number(first.headers.get('retry-after-ms'));
    assert.ok(waitMs >= 1 && waitMs <= 2000, String(waitMs));
    assert.ok(attempts[1] - first.at >= waitMs - 5, `retried ${attempts[1] - first.at} ms after, asked ${waitMs}`);
  });

  // Goal: a request whose ~45,000-byte message alone exceeds the 40,000 TPM bucket is a 429
  // RateLimitError with x-should-retry: false, so the SDK sends it exactly once; being denied,
  // it consumes nothing from either bucket and nothing from the wallet.
  test(`${api}: 429 a request larger than TPM is not retried`, async () => {
    const tenant = await makeTenant(gateway);
    const kase = errorCase('request_larger_than_tpm', api);
    const items = api === 'chat' ? kase.body.messages : kase.body.input;
    assert.equal(Buffer.byteLength(items[0].content), 45000);
    const error = await expectCase(gateway, kase, kase.client(gateway, tenant.key), tenant.key);
    const rates = assertRateHeaders(error.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
    assert.deepEqual([rates.remainingRequests, rates.remainingTokens], [UNVERIFIED_RPM, UNVERIFIED_TPM]);
    const account = await tenant.account();
    assert.deepEqual([account.balance_usd, account.held_usd], ['1.000000000', '0.000000000']);
  });

  // Goal: in maintenance mode (retry_after_s 1) a request is a 503 InternalServerError
  // (service_unavailable, api_error) with retry-after: 1 and x-should-retry: true; the default
  // client sends it exactly three times, waiting 1 s between attempts. Leaving maintenance
  // restores service.
  test(`${api}: 503 maintenance is retried twice`, async () => {
    const tenant = await makeTenant(gateway);
    const kase = errorCase('maintenance', api);
    const client = kase.client(gateway, tenant.key);
    assert.equal(client.maxRetries, 2);
    let error;
    let elapsedMs;
    try {
      assert.equal((await gateway.setMaintenance(true, 1)).enabled, true);
      const started = performance.now();
      error = await expectCase(gateway, kase, client, tenant.key);
      elapsedMs = performance.now() - started;
    } finally {
      await gateway.setMaintenance(false);
    }
    assert.equal(error.headers.get('retry-after-ms') ?? '1000', '1000');
    assertRateHeaders(error.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
    assert.ok(elapsedMs >= 1950, String(elapsedMs));
    const { result, diff } = await gateway.counting(() => create(client, api));
    assert.equal(result.model, MODEL);
    assert.deepEqual(diff, { [`${route} 200`]: 1 });
  });
}

// Goal: maintenance answers every client route, the models list included: `models.list()`
// gets the same retried 503 (with the caller's rate headers), and the list is back once it ends.
test('503 maintenance covers the models list', async () => {
  const tenant = await makeTenant(gateway);
  const kase = errorCase('maintenance_models');
  const client = kase.client(gateway, tenant.key);
  let error;
  try {
    assert.equal((await gateway.setMaintenance(true, 1)).enabled, true);
    error = await expectCase(gateway, kase, client, tenant.key);
  } finally {
    await gateway.setMaintenance(false);
  }
  assertRateHeaders(error.headers, { limitRequests: UNVERIFIED_RPM, limitTokens: UNVERIFIED_TPM });
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.ok(ids.includes(MODEL), JSON.stringify(ids));
});
