// Node SDK conformance, the SDK's own README: the Responses examples of the pinned `openai`
// package's README.md (the first `responses.create({model, instructions, input})` example and
// the "Streaming responses" example), read from node_modules at test time and run unchanged as
// Node programs; only OPENAI_BASE_URL and OPENAI_API_KEY point them at the gateway.
//
// The examples name the model 'gpt-5.5', so this file's gateway lists 'gpt-5.5' in its registry,
// served by the sandbox at fikra-flash's prices (an operator choosing a public id; against the
// reference registry the same program gets 400 model_not_found).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { Gateway, makeTenant, nanosToUsd, stopChecked } from './harness.mjs';
import { SANDBOX_OUTPUT_TOKENS, SIGNUP_NANOS, flashCost } from './checks.mjs';

const README_MODEL = 'gpt-5.5';
const SUITE_DIR = new URL('.', import.meta.url).pathname;
const README = readFileSync(new URL('./node_modules/openai/README.md', import.meta.url), 'utf8');
const EXAMPLE_TIMEOUT_MS = 20_000;
const run = promisify(execFile);

/** The fenced ```ts blocks of the README, in order. */
function codeBlocks(markdown) {
  return [...markdown.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match) => match[1]);
}

/** The first block after the heading `heading`. */
function blockAfter(heading) {
  const start = README.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `the README has no heading ${heading}`);
  return codeBlocks(README.slice(start))[0];
}

const FIRST_EXAMPLE = codeBlocks(README).find((code) => code.includes('client.responses.create('));
const STREAMING_EXAMPLE = blockAfter('## Streaming responses');

let gateway;
before(async () => {
  gateway = await new Gateway({
    name: 'readme',
    extra: `
[[models]]
id = "${README_MODEL}"
upstream = "sandbox"
input_usd_per_million = "0.5"
output_usd_per_million = "0.5"
max_output_tokens = 8192
`,
  }).start();
});
after(() => stopChecked(gateway));

/** Runs `code` as an ES module in this suite's directory (so `import OpenAI from 'openai'`
 * resolves to the pinned package) with the gateway's base URL and `key` in the environment. */
async function runExample(code, key) {
  const env = { ...process.env, OPENAI_BASE_URL: gateway.baseURL, OPENAI_API_KEY: key };
  return run(process.execPath, ['--input-type=module', '--eval', code], {
    cwd: SUITE_DIR,
    env,
    timeout: EXAMPLE_TIMEOUT_MS,
  });
}

// Goal: the README's first example (instructions + input, then `console.log(response.output_text)`)
// runs unchanged and prints the sandbox's answer, which is exactly what the same request made
// here returns (the sandbox is deterministic); each call is billed once at the registry price.
test("the README's first Responses example runs unchanged", async () => {
  assert.ok(FIRST_EXAMPLE, 'no responses.create example in the README');
  assert.match(FIRST_EXAMPLE, /apiKey: process\.env\['OPENAI_API_KEY'\]/);
  assert.match(FIRST_EXAMPLE, /instructions: /);
  assert.match(FIRST_EXAMPLE, new RegExp(`model: '${README_MODEL.replace('.', '\\.')}'`));
  assert.match(FIRST_EXAMPLE, /console\.log\(response\.output_text\);/);
  const tenant = await makeTenant(gateway);
  const { stdout, stderr } = await runExample(FIRST_EXAMPLE, tenant.key);
  assert.equal(stderr, '');
  const [, instructions] = /instructions: '([^']*)'/.exec(FIRST_EXAMPLE);
  const [, input] = /input: '([^']*)'/.exec(FIRST_EXAMPLE);
  const same = await tenant.client().responses.create({ model: README_MODEL, instructions, input });
  assert.equal(same.output_text.split(' ').length, SANDBOX_OUTPUT_TOKENS);
  assert.equal(stdout, `${same.output_text}\n`);

  const records = await gateway.usageRecords(tenant.accountId, 2);
  assert.equal(records.length, 2);
  const cost = flashCost(same.usage.input_tokens, same.usage.output_tokens);
  assert.deepEqual(
    records.map((record) => [record.model, record.outcome, record.cost_usd]),
    Array(2).fill([README_MODEL, 'completed', nanosToUsd(cost)]),
  );
  const account = await gateway.settledAccount(tenant.accountId);
  assert.equal(account.balance_usd, nanosToUsd(SIGNUP_NANOS - 2n * cost));
});

// Goal: the README's streaming example (`stream: true`, then `console.log(event)` for each event)
// runs unchanged and prints every typed event in SPEC order with sequence numbers 0, 1, 2, ...;
// the stream is billed once, completed.
test("the README's streaming example runs unchanged", async () => {
  assert.match(STREAMING_EXAMPLE, /const client = new OpenAI\(\);/);
  assert.match(STREAMING_EXAMPLE, /stream: true/);
  assert.match(STREAMING_EXAMPLE, /for await \(const event of stream\) \{\n\s*console\.log\(event\);/);
  const tenant = await makeTenant(gateway);
  const { stdout, stderr } = await runExample(STREAMING_EXAMPLE, tenant.key);
  assert.equal(stderr, '');
  // util.inspect prints each event's own `type`; nested objects' types never start "response.".
  const types = [...stdout.matchAll(/type: '(response\.[a-z_.]+)'/g)].map((match) => match[1]);
  assert.deepEqual(types, [
    'response.created',
    'response.in_progress',
    'response.output_item.added',
    'response.content_part.added',
    ...Array(SANDBOX_OUTPUT_TOKENS).fill('response.output_text.delta'),
    'response.output_text.done',
    'response.content_part.done',
    'response.output_item.done',
    'response.completed',
  ]);
  const sequence = [...stdout.matchAll(/sequence_number: (\d+)/g)].map((match) => Number(match[1]));
  assert.deepEqual(
    sequence,
    types.map((_, index) => index),
  );
  const records = await gateway.usageRecords(tenant.accountId, 1);
  assert.deepEqual(
    records.map((record) => [record.model, record.outcome]),
    [[README_MODEL, 'completed']],
  );
  const cost = flashCost(records[0].prompt_tokens, records[0].completion_tokens);
  assert.equal(records[0].completion_tokens, SANDBOX_OUTPUT_TOKENS);
  assert.equal(records[0].cost_usd, nanosToUsd(cost));
  const account = await gateway.settledAccount(tenant.accountId);
  assert.equal(account.balance_usd, nanosToUsd(SIGNUP_NANOS - cost));
});
