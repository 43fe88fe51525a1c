// What the Node SDK conformance tests share: the module gateway's registry and limits, the
// checks of the seven per-request headers (Go-style reset durations), costs in BigInt nano-USD,
// and `expectCase`, which runs one SPEC §2 error case through the SDK and asserts both the
// thrown error and how many times the server received the request.
//
// Must never: compare money as floats, or count the SDK's attempts from the client side alone
// (the server's `fikra_requests_total` is the witness).

import assert from 'node:assert/strict';
import { APIError } from 'openai';
import { RATE_HEADERS } from './error_cases.mjs';

export const CHAT = '/v1/chat/completions';
export const RESPONSES = '/v1/responses';
export const MODEL = 'fikra-flash';
export const FLASH_NANOS_PER_TOKEN = 500n; // 0.5 USD per 1M tokens, input and output (SPEC §3)
export const SANDBOX_OUTPUT_TOKENS = 16; // [sandbox] output_tokens of the module gateway
export const MESSAGES = [{ role: 'user', content: 'Habari! Tell me about Nairobi.' }];
export const PROMPT = 'Habari! Tell me about Nairobi.';
export const UNVERIFIED_RPM = 30;
export const UNVERIFIED_TPM = 40000;
export const SIGNUP_NANOS = 1_000_000_000n;

/** Go's time.Duration.String() of a whole number of milliseconds. */
export function goDuration(ms) {
  if (ms === 0) return '0s';
  if (ms < 1000) return `${ms}ms`;
  const hours = Math.floor(ms / 3_600_000);
  const minutes = Math.floor((ms % 3_600_000) / 60_000);
  const seconds = Math.floor((ms % 60_000) / 1000);
  const millis = ms % 1000;
  const text = `${seconds}${millis ? `.${String(millis).padStart(3, '0').replace(/0+$/, '')}` : ''}s`;
  if (hours) return `${hours}h${minutes}m${text}`;
  if (minutes) return `${minutes}m${text}`;
  return text;
}

const DURATION = /^(?:(\d+)ms|(?:(\d+)h)?(?:(\d+)m)?(\d+)(?:\.(\d{1,3}))?s)$/;

/** Milliseconds of a reset header; fails unless it is Go's canonical spelling of whole ms. */
export function parseGoDurationMs(text) {
  const match = DURATION.exec(text);
  assert.ok(match, `not a Go-style duration of whole milliseconds: ${text}`);
  let ms;
  if (match[1] !== undefined) {
    ms = Number(match[1]);
  } else {
    const [hours, minutes, seconds, fraction] = [match[2], match[3], match[4], match[5]];
    ms = Number(hours ?? 0) * 3_600_000 + Number(minutes ?? 0) * 60_000 + Number(seconds) * 1000;
    ms += Number((fraction ?? '').padEnd(3, '0') || 0);
  }
  assert.equal(goDuration(ms), text, `reset header ${text} is not canonical`);
  return ms;
}

/** The seven per-request headers of SPEC §1 (a fetch `Headers`) are present and well-formed. */
export function assertRateHeaders(headers, { limitRequests, limitTokens }) {
  assert.match(headers.get('x-request-id') ?? '', /^[A-Za-z0-9_-]{4,128}$/);
  for (const name of RATE_HEADERS) assert.ok(headers.has(name), `missing ${name}`);
  const parsed = {
    limitRequests: Number(headers.get('x-ratelimit-limit-requests')),
    remainingRequests: Number(headers.get('x-ratelimit-remaining-requests')),
    resetRequestsMs: parseGoDurationMs(headers.get('x-ratelimit-reset-requests')),
    limitTokens: Number(headers.get('x-ratelimit-limit-tokens')),
    remainingTokens: Number(headers.get('x-ratelimit-remaining-tokens')),
    resetTokensMs: parseGoDurationMs(headers.get('x-ratelimit-reset-tokens')),
  };
  assert.equal(parsed.limitRequests, limitRequests);
  assert.equal(parsed.limitTokens, limitTokens);
  assert.ok(parsed.remainingRequests >= 0 && parsed.remainingRequests <= limitRequests, JSON.stringify(parsed));
  assert.ok(parsed.remainingTokens >= 0 && parsed.remainingTokens <= limitTokens, JSON.stringify(parsed));
  return parsed;
}

/** The cost of a fikra-flash answer in BigInt nano-USD. */
export function flashCost(inputTokens, outputTokens) {
  return (BigInt(inputTokens) + BigInt(outputTokens)) * FLASH_NANOS_PER_TOKEN;
}

/** Sends `errorCase`'s request with `client`, which must throw exactly the case's error after
 * the server received it exactly once, or 1 + maxRetries times if the SDK retries this answer
 * (all answered with the case's status). Returns the error. */
export async function expectCase(gateway, errorCase, client, arrangedKey) {
  const sent = errorCase.sdkRetried ? 1 + client.maxRetries : 1;
  const { result: error, diff } = await gateway.counting(async () => {
    try {
      await errorCase.send(client);
    } catch (thrown) {
      return thrown;
    }
    assert.fail(`${errorCase.name}: the SDK call succeeded`);
  });
  assert.ok(error instanceof APIError, `${errorCase.name}: threw ${error}`);
  errorCase.check(error, arrangedKey);
  assert.deepEqual(diff, { [`${errorCase.route} ${errorCase.status}`]: sent }, `server counted ${JSON.stringify(diff)}`);
  return error;
}

/** Spends `count` requests of the key's account quickly (raw fetch, 1-token answers). */
export async function exhaustRpm(gateway, key, count = UNVERIFIED_RPM) {
  for (let index = 0; index < count; index += 1) {
    const response = await rawChat(gateway, key);
    const text = await response.text();
    assert.equal(response.status, 200, `request ${index + 1} of ${count}: ${response.status} ${text}`);
  }
}

/** One raw 1-token chat request with `key` (a fetch Response, body unread). */
export function rawChat(gateway, key) {
  return fetch(`${gateway.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, messages: MESSAGES, max_tokens: 1 }),
    signal: AbortSignal.timeout(10_000),
  });
}
