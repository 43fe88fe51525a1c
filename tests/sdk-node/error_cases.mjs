// The SPEC §2 error cases of tests/cases/errors.json, as the Node SDK meets them.
//
// Owns: reading the one table that tests/api_errors.rs and tests/sdk (Python) read too, turning a
// case into an SDK call on Chat Completions or, translated, on the Responses API (`messages`
// become `input`, `max_tokens` becomes `max_output_tokens`), and `check`, which asserts that the
// error the SDK threw is exactly what the case expects: class, status, body fields, headers and
// message. Must never: accept a field the table does not define (a typo would check nothing), or
// loosen an expectation for one API flavour beyond the renamed parameter and route.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { SDK_TIMEOUT_MS } from './harness.mjs';

const TABLE_URL = new URL('../cases/errors.json', import.meta.url);
// The six rate headers, and with x-request-id what every answer to a valid key carries (SPEC §1).
export const RATE_HEADERS = [
  'x-ratelimit-limit-requests',
  'x-ratelimit-remaining-requests',
  'x-ratelimit-reset-requests',
  'x-ratelimit-limit-tokens',
  'x-ratelimit-remaining-tokens',
  'x-ratelimit-reset-tokens',
];
export const ACCOUNT_HEADERS = ['x-request-id', ...RATE_HEADERS];
const CASE_FIELDS = new Set([
  'name', 'suites', 'given', 'request', 'status', 'type', 'code', 'param', 'headers',
  'headers_present', 'headers_absent', 'rate_headers', 'message_contains',
  'message_starts_with', 'never_echoes_key', 'sdk',
]);
const REQUEST_FIELDS = new Set(['method', 'path', 'key', 'body', 'raw_body', 'content_repeated']);
// The table names openai-python's classes; openai-node calls the status-error base `APIError`.
const NODE_CLASS = { APIStatusError: 'APIError' };

function unknownFields(object, allowed) {
  return Object.keys(object).filter((field) => !allowed.has(field));
}

/** One case of the table, for one API flavour: "chat" (as written) or "responses". */
export class ErrorCase {
  constructor(raw, api) {
    const request = raw.request ?? {};
    this.name = raw.name;
    this.api = api;
    this.method = request.method ?? 'POST';
    this.path = request.path ?? '/v1/chat/completions';
    this.key = request.key ?? 'account';
    if (this.key === 'revoked') this.key = 'account';
    this.body = request.body === undefined ? undefined : structuredClone(request.body);
    if (request.content_repeated) {
      const [text, times] = request.content_repeated;
      this.body.messages[0].content = text.repeat(times);
    }
    this.status = raw.status;
    this.type = raw.type;
    this.code = raw.code;
    this.param = raw.param ?? null;
    this.headers = raw.headers ?? {};
    this.headersPresent = raw.headers_present ?? [];
    this.headersAbsent = raw.headers_absent ?? [];
    this.rateHeaders = Boolean(raw.rate_headers);
    this.messageContains = raw.message_contains ?? [];
    this.messageStartsWith = raw.message_starts_with ?? null;
    this.neverEchoesKey = Boolean(raw.never_echoes_key);
    this.sdkError = raw.sdk.error;
    this.sdkRetried = Boolean(raw.sdk.retried);
    if (api === 'responses') this.#asResponses();
  }

  /** The same request to POST /v1/responses: the chat-only names become their Responses names. */
  #asResponses() {
    assert.equal(this.method, 'POST', `${this.name}: only POST cases have a Responses form`);
    assert.ok(this.path.endsWith('/chat/completions'), this.name);
    this.path = this.path.replace(/\/chat\/completions$/, '/responses');
    if (this.body !== undefined) {
      const { messages, max_tokens: maxTokens, ...rest } = this.body;
      this.body = { ...rest };
      if (messages !== undefined) this.body.input = messages;
      if (maxTokens !== undefined) this.body.max_output_tokens = maxTokens;
    }
    const renamed = { messages: 'input', max_tokens: 'max_output_tokens' };
    if (this.param in renamed) this.param = renamed[this.param];
    this.messageContains = this.messageContains.map((part) => renamed[part] ?? part);
  }

  /** The SDK class the case expects (the exact class, not a subclass). */
  get errorClass() {
    return OpenAI[NODE_CLASS[this.sdkError] ?? this.sdkError];
  }

  /** The `route` label /metrics counts this request under. */
  get route() {
    if (this.path.startsWith('/v1/models/')) return '/v1/models/{id}';
    return this.path.startsWith('/v1/') ? this.path : 'unknown';
  }

  keySent(arrangedKey) {
    if (typeof this.key === 'object') return this.key.literal;
    if (this.key === 'split') return `${arrangedKey.slice(0, 20)} ${arrangedKey.slice(20)}`;
    assert.equal(this.key, 'account', `${this.name}: an SDK case sends a key`);
    return arrangedKey;
  }

  /** An SDK client for this case: the key it sends, and a base URL its path is under. */
  client(gateway, arrangedKey, options = {}) {
    const baseURL = this.path.startsWith('/v1/') ? gateway.baseURL : gateway.rootURL;
    return new OpenAI({ baseURL, apiKey: this.keySent(arrangedKey), timeout: SDK_TIMEOUT_MS, ...options });
  }

  /** Sends this case's request with `client` through the SDK (a promise). */
  send(client) {
    if (this.method === 'GET' && this.path.startsWith('/v1/models/')) {
      return client.models.retrieve(this.path.split('/').at(-1));
    }
    if (this.method === 'GET' && this.path === '/v1/models') return client.models.list();
    assert.equal(this.method, 'POST', this.name);
    assert.ok(this.body !== undefined, `${this.name}: the SDK only sends JSON objects`);
    if (this.api === 'responses') return client.responses.create(this.body);
    return client.chat.completions.create(this.body);
  }

  /** Asserts `error` is exactly what this case expects. */
  check(error, arrangedKey) {
    const name = `${this.name} (${this.api})`;
    assert.equal(error.constructor, this.errorClass, `${name}: SDK threw ${error.constructor.name}, expected ${this.sdkError}`);
    assert.equal(error.status, this.status, name);
    const body = error.error;
    assert.ok(body && typeof body === 'object', `${name}: error body is not the JSON error object: ${body}`);
    assert.deepEqual(Object.keys(body).sort(), ['code', 'message', 'param', 'type'], name);
    assert.ok(typeof body.message === 'string' && body.message.length > 0, name);
    assert.deepEqual([error.code, error.type, error.param], [this.code, this.type, this.param], `${name}: ${JSON.stringify(body)}`);
    const headers = error.headers;
    assert.equal(headers.get('content-type'), 'application/json', name);
    for (const [header, value] of Object.entries(this.headers)) {
      assert.equal(headers.get(header), value, `${name}: ${header}`);
    }
    for (const header of [...this.headersPresent, ...(this.rateHeaders ? ACCOUNT_HEADERS : [])]) {
      assert.ok(headers.has(header), `${name}: missing ${header}`);
    }
    for (const header of this.headersAbsent) assert.ok(!headers.has(header), `${name}: sent ${header}`);
    for (const part of this.messageContains) assert.ok(body.message.includes(part), `${name}: ${part} not in ${body.message}`);
    if (this.messageStartsWith !== null) assert.ok(body.message.startsWith(this.messageStartsWith), `${name}: ${body.message}`);
    if (this.neverEchoesKey) {
      const key = this.keySent(arrangedKey);
      const text = JSON.stringify(body);
      assert.ok(!text.includes(key.slice(8, 20)) && !text.includes(key.slice(-12)), `${name} echoed the key: ${text}`);
    }
    assert.equal(error.requestID, headers.get('x-request-id'), name);
  }
}

function load() {
  const byName = new Map();
  for (const raw of JSON.parse(readFileSync(TABLE_URL, 'utf8')).cases) {
    const unknown = unknownFields(raw, CASE_FIELDS);
    assert.deepEqual(unknown, [], `case ${raw.name}: unknown fields`);
    assert.deepEqual(unknownFields(raw.request ?? {}, REQUEST_FIELDS), [], `case ${raw.name}: unknown request fields`);
    assert.ok(!byName.has(raw.name), `case name ${raw.name} repeats`);
    byName.set(raw.name, raw);
  }
  return byName;
}

const CASES = load();

/** The case named `name` for `api` ("chat" or "responses"); it must be one the SDK suites drive. */
export function errorCase(name, api = 'chat') {
  const raw = CASES.get(name);
  assert.ok(raw, `no case ${name} in ${TABLE_URL.pathname}`);
  assert.ok((raw.suites ?? []).includes('sdk'), `${name} is not an SDK case`);
  assert.ok(raw.sdk && 'error' in raw.sdk && 'retried' in raw.sdk, `${name}: an SDK case names its exception and retry`);
  return new ErrorCase(raw, api);
}
