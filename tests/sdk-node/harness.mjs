// Runs one fikra-gateway process for the Node SDK conformance tests and talks to its admin API.
//
// Owns: starting `$FIKRA_GATEWAY_BIN serve --config FILE` on two free localhost ports with a
// fresh admin token, waiting for /readyz, the admin calls (accounts, keys, top-ups, usage,
// maintenance), reading `fikra_requests_total` from /metrics, and stopping with SIGTERM.
// Must never: kill a gateway quietly (stop() reports the exit code, and the suites assert it
// is 0), sleep for a fixed time instead of polling real state, or turn money into floats
// (amounts are BigInt nano-USD, parsed from the admin API's decimal strings).
//
// The same behaviour as tests/sdk/gateway_harness.py, so both SDK suites test one contract.

import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';

// Every SDK call has a deadline, so a hung gateway fails a test instead of hanging the suite.
export const SDK_TIMEOUT_MS = 15_000;
export const READY_TIMEOUT_MS = 15_000;
export const STOP_TIMEOUT_MS = 10_000;
export const NANOS_PER_USD = 1_000_000_000n;
const DEFAULT_BINARY = '/work/main/target/debug/fikra-gateway';
// How often `waitUntil` polls its condition.
const POLL_INTERVAL_MS = 20;
// The metric the suite uses to count what the server actually received.
const REQUESTS_TOTAL = /^fikra_requests_total\{route="([^"]*)",status="([^"]*)"\} (\d+)$/;
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

export const sleepMs = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `condition` (sync or async) until it holds or `timeoutMs` passed; whether it held.
 * The condition is tried once more after the deadline. The one way this suite waits for real
 * state of the gateway process: a bounded poll, never a fixed sleep. */
export async function waitUntil(timeoutMs, condition) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const lastTry = performance.now() >= deadline;
    if (await condition()) return true;
    if (lastTry) return false;
    await sleepMs(POLL_INTERVAL_MS);
  }
}

export function gatewayBinary() {
  return process.env.FIKRA_GATEWAY_BIN || DEFAULT_BINARY;
}

/** A port the kernel just handed out for 127.0.0.1 (closed again, so the gateway can bind it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Exact BigInt nano-USD of a decimal USD string such as "1.000000000" (no floats). */
export function usdToNanos(text) {
  const match = /^(-?)(\d+)(?:\.(\d{1,9}))?$/.exec(text);
  if (!match) throw new Error(`USD amount ${JSON.stringify(text)} is not a whole number of nano-USD`);
  const [, sign, whole, fraction = ''] = match;
  const nanos = BigInt(whole) * NANOS_PER_USD + BigInt(fraction.padEnd(9, '0'));
  return sign ? -nanos : nanos;
}

/** The admin API's spelling of an amount of BigInt nano-USD: 9 fraction digits. */
export function nanosToUsd(nanos) {
  const sign = nanos < 0n ? '-' : '';
  const magnitude = nanos < 0n ? -nanos : nanos;
  const fraction = String(magnitude % NANOS_PER_USD).padStart(9, '0');
  return `${sign}${magnitude / NANOS_PER_USD}.${fraction}`;
}

export function randomBase62(length) {
  let text = '';
  for (let i = 0; i < length; i += 1) text += BASE62[randomInt(BASE62.length)];
  return text;
}

/** The module gateway's configuration: the reference registry, the sandbox at full speed, and
 * the limits tests/sdk uses (unverified 30 RPM / 40,000 TPM; the "bulk" account lifted). */
export function configToml(listenPort, adminPort, { tokensPerSecond = 0, outputTokens = 16, extra = '' } = {}) {
  return `[server]
listen = "127.0.0.1:${listenPort}"
admin_listen = "127.0.0.1:${adminPort}"
workers = 2

[billing]
kes_per_usd = "130"
signup_credit_usd = "1.00"

[sandbox]
time_to_first_token_ms = 0
tokens_per_second = ${tokensPerSecond}
output_tokens = ${outputTokens}

[tiers.unverified]
rpm = 30
tpm = 40000

[tiers.trusted]
rpm = 100
tpm = 160000

[[account_overrides]]
account = "bulk"
rpm = 100000
tpm = 100000000
${extra}`;
}

export class GatewayError extends Error {}

/** One running gateway process plus admin helpers. */
export class Gateway {
  constructor({ name = 'gateway', ...configOptions } = {}) {
    this.name = name;
    this.configOptions = configOptions;
    this.workdir = mkdtempSync(join(tmpdir(), `fikra-sdk-node-${name}-`));
    this.adminToken = `adm_${randomBase62(32)}`;
    this.process = null;
    this.exitCode = null;
    this.exited = null;
    this.accountCounter = 0;
  }

  get baseURL() {
    return `http://127.0.0.1:${this.port}/v1`;
  }

  get rootURL() {
    return `http://127.0.0.1:${this.port}`;
  }

  get adminURL() {
    return `http://127.0.0.1:${this.adminPort}`;
  }

  /** Starts the process and resolves once /readyz answers 200 (the gateway object). */
  async start() {
    const binary = gatewayBinary();
    if (!existsSync(binary)) {
      throw new GatewayError(`gateway binary not found at ${binary} (set FIKRA_GATEWAY_BIN or run \`cargo build\`)`);
    }
    this.port = await freePort();
    do {
      this.adminPort = await freePort();
    } while (this.adminPort === this.port);
    this.configPath = join(this.workdir, `${this.name}.toml`);
    writeFileSync(this.configPath, configToml(this.port, this.adminPort, this.configOptions));
    this.logPath = join(this.workdir, `${this.name}.log`);
    const log = openSync(this.logPath, 'w');
    this.process = spawn(binary, ['serve', '--config', this.configPath], {
      env: { ...process.env, FIKRA_ADMIN_TOKEN: this.adminToken },
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    this.exited = new Promise((resolve) => {
      this.process.once('exit', (code, signal) => {
        this.exitCode = code ?? `signal ${signal}`;
        resolve(this.exitCode);
      });
    });
    let last = 'no answer';
    const ready = async () => {
      if (this.exitCode !== null) {
        throw new GatewayError(`${this.name} exited with ${this.exitCode} before it was ready:\n${this.logTail()}`);
      }
      try {
        const response = await fetch(`${this.adminURL}/readyz`, { signal: AbortSignal.timeout(1000) });
        const text = await response.text();
        if (response.status === 200) return true;
        last = `${response.status} ${text}`;
      } catch (error) {
        last = String(error);
      }
      return false;
    };
    if (await waitUntil(READY_TIMEOUT_MS, ready)) return this;
    await this.kill();
    throw new GatewayError(`${this.name} not ready within ${READY_TIMEOUT_MS} ms (last /readyz: ${last}):\n${this.logTail()}`);
  }

  /** Resolves to the exit code, or null if it is still running after `timeoutMs` (then killed). */
  async waitExit(timeoutMs = STOP_TIMEOUT_MS) {
    let timer;
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), timeoutMs);
    });
    const code = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (code === null) await this.kill();
    return code;
  }

  /** SIGTERM, then the exit code (null: it did not exit within STOP_TIMEOUT_MS and was killed). */
  async stop() {
    if (this.process === null) return null;
    if (this.exitCode !== null) return this.exitCode;
    this.process.kill('SIGTERM');
    return this.waitExit();
  }

  async kill() {
    if (this.process !== null && this.exitCode === null) {
      this.process.kill('SIGKILL');
      await this.exited;
    }
  }

  logTail(lines = 40) {
    try {
      return readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  // ----- admin API ------------------------------------------------------------------------

  async admin(method, path, expected, body) {
    const response = await fetch(`${this.adminURL}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.adminToken}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await response.text();
    if (response.status !== expected) {
      throw new GatewayError(`admin ${method} ${path} -> ${response.status} (expected ${expected}): ${text}`);
    }
    return JSON.parse(text);
  }

  async createAccount({ signupCreditUsd, accountId } = {}) {
    let id = accountId;
    if (id === undefined) {
      this.accountCounter += 1;
      id = `acct-${this.accountCounter}-${randomBase62(8)}`;
    }
    const body = { id };
    if (signupCreditUsd !== undefined) body.signup_credit_usd = signupCreditUsd;
    const account = await this.admin('POST', '/admin/accounts', 201, body);
    if (account.id !== id) throw new GatewayError(`created ${JSON.stringify(account)}, asked for ${id}`);
    return account;
  }

  account(accountId) {
    return this.admin('GET', `/admin/accounts/${accountId}`, 200);
  }

  async createKey(accountId, kind = 'live') {
    const key = await this.admin('POST', `/admin/accounts/${accountId}/keys`, 201, { kind });
    if (key.kind !== kind) throw new GatewayError(`created ${JSON.stringify(key)}, asked for ${kind}`);
    return key;
  }

  revokeKey(keyId) {
    return this.admin('DELETE', `/admin/keys/${keyId}`, 200);
  }

  topup(accountId, amount, currency, reference) {
    return this.admin('POST', `/admin/accounts/${accountId}/topups`, 200, { amount, currency, reference });
  }

  async usage(accountId, limit = 100) {
    return (await this.admin('GET', `/admin/accounts/${accountId}/usage?limit=${limit}`, 200)).data;
  }

  setMaintenance(enabled, retryAfterS) {
    const body = { enabled };
    if (retryAfterS !== undefined) body.retry_after_s = retryAfterS;
    return this.admin('PUT', '/admin/maintenance', 200, body);
  }

  /** The account once nothing is held any more (SPEC §3: settle within a second of the end). */
  async settledAccount(accountId, timeoutMs = 1000) {
    let account;
    await waitUntil(timeoutMs, async () => {
      account = await this.account(accountId);
      return usdToNanos(account.held_usd) === 0n;
    });
    return account;
  }

  /** The ledger once it holds at least `count` records (or whatever it holds after `timeoutMs`). */
  async usageRecords(accountId, count, timeoutMs = 1000) {
    let records;
    await waitUntil(timeoutMs, async () => {
      records = await this.usage(accountId);
      return records.length >= count;
    });
    return records;
  }

  // ----- metrics --------------------------------------------------------------------------

  /** `fikra_requests_total` as a Map from "route status" to count; absent series count zero. */
  async requestCounts() {
    const response = await fetch(`${this.adminURL}/metrics`, { signal: AbortSignal.timeout(5000) });
    const text = await response.text();
    if (response.status !== 200) throw new GatewayError(`/metrics -> ${response.status}: ${text}`);
    const counts = new Map();
    for (const line of text.split('\n')) {
      const match = REQUESTS_TOTAL.exec(line);
      if (match) counts.set(`${match[1]} ${match[2]}`, Number(match[3]));
    }
    return counts;
  }

  /** What the server counted while `action` ran: { result, diff } where diff maps
   * "route status" to how many more requests it counted (only the series that changed). */
  async counting(action) {
    const before = await this.requestCounts();
    const result = await action();
    const after = await this.requestCounts();
    const diff = {};
    for (const key of new Set([...before.keys(), ...after.keys()])) {
      const change = (after.get(key) ?? 0) - (before.get(key) ?? 0);
      if (change !== 0) diff[key] = change;
    }
    return { result, diff };
  }
}

/** Stops a test file's gateway with SIGTERM and fails unless it exits 0 within the deadline
 * (graceful shutdown is part of the contract, SPEC §6). For the file's `after` hook. A clean
 * exit removes the gateway's directory (config and log); a failure keeps it and names it. */
export async function stopChecked(gateway) {
  if (gateway === undefined) return;
  const code = await gateway.stop();
  if (code !== 0) {
    throw new GatewayError(
      `gateway did not exit 0 within ${STOP_TIMEOUT_MS} ms of SIGTERM (exit code ${code}; log in ${gateway.logPath}):\n${gateway.logTail()}`,
    );
  }
  rmSync(gateway.workdir, { recursive: true, force: true });
}

/** One fresh account with one key, and SDK clients using it. */
export class Tenant {
  constructor(gateway, accountId, key, keyId) {
    this.gateway = gateway;
    this.accountId = accountId;
    this.key = key;
    this.keyId = keyId;
  }

  client(options = {}) {
    const { key, ...rest } = options;
    return new OpenAI({ baseURL: this.gateway.baseURL, apiKey: key ?? this.key, timeout: SDK_TIMEOUT_MS, ...rest });
  }

  account() {
    return this.gateway.account(this.accountId);
  }
}

/** A fresh account (signup credit 1 USD unless given) and one key of `kind`. */
export async function makeTenant(gateway, { signupCreditUsd, kind = 'live' } = {}) {
  const account = await gateway.createAccount({ signupCreditUsd });
  const key = await gateway.createKey(account.id, kind);
  return new Tenant(gateway, account.id, key.key, key.key_id);
}
