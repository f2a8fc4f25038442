// node --test: when the console polls the API, and how long it waits after a 429.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CHANGING_MS, SETTLED_MS, isSettled, nextPollDelay, pollInterval, retryAfterSeconds } from '../src/polling.js';

const headers = (values) => (name) => values[name] ?? null;
const NOW = Date.UTC(2026, 0, 2, 3, 4, 5);

test('an instance is settled when active or in error with nothing pending', () => {
  assert.equal(isSettled({ status: 'active' }), true);
  assert.equal(isSettled({ status: 'error' }), true);
  assert.equal(isSettled({ status: 'active', pending_deployment_spec: { version: 2 } }), false);
  for (const status of ['new', 'provisioning', 'updating', 'deleting']) assert.equal(isSettled({ status }), false);
});

test('pages poll every 2 s while something changes, every 10 s once all is settled', () => {
  assert.equal(CHANGING_MS, 2000);
  assert.equal(SETTLED_MS, 10000);
  assert.equal(pollInterval([{ status: 'active' }, { status: 'error' }]), SETTLED_MS);
  assert.equal(pollInterval([{ status: 'active' }, { status: 'provisioning' }]), CHANGING_MS);
  assert.equal(pollInterval([{ status: 'active', pending_deployment_spec: {} }]), CHANGING_MS);
  assert.equal(pollInterval([]), SETTLED_MS);
});

test('a 429 is waited out as its headers say', () => {
  assert.equal(retryAfterSeconds(headers({ 'retry-after': '17' }), NOW), 17);
  assert.equal(retryAfterSeconds(headers({ 'retry-after': new Date(NOW + 42_000).toUTCString() }), NOW), 42);
  // inferd's ratelimit-reset is an epoch second; a small value is a delay (the IETF draft's reading)
  assert.equal(retryAfterSeconds(headers({ 'ratelimit-reset': String(NOW / 1000 + 90) }), NOW), 90);
  assert.equal(retryAfterSeconds(headers({ 'ratelimit-reset': '12' }), NOW), 12);
  assert.equal(retryAfterSeconds(headers({ 'retry-after': '5', 'ratelimit-reset': String(NOW / 1000 + 90) }), NOW), 5);
  // nothing usable: 30 s; never less than 1 s nor more than an hour
  assert.equal(retryAfterSeconds(headers({}), NOW), 30);
  assert.equal(retryAfterSeconds(headers({ 'retry-after': 'soon' }), NOW), 30);
  assert.equal(retryAfterSeconds(headers({ 'retry-after': '0' }), NOW), 1);
  assert.equal(retryAfterSeconds(headers({ 'retry-after': '999999' }), NOW), 3600);
  assert.equal(retryAfterSeconds(headers({ 'ratelimit-reset': String(NOW / 1000 - 5) }), NOW), 1);
});

test('the next poll comes an interval after the last answer, and not before the limit lifts', () => {
  assert.equal(nextPollDelay({ lastDoneMs: null, intervalMs: 5000, nowMs: NOW }), 0);
  assert.equal(nextPollDelay({ lastDoneMs: NOW - 2000, intervalMs: 5000, nowMs: NOW }), 3000);
  assert.equal(nextPollDelay({ lastDoneMs: NOW - 9000, intervalMs: 5000, nowMs: NOW }), 0); // overdue (tab shown again)
  assert.equal(nextPollDelay({ lastDoneMs: NOW - 2000, intervalMs: 5000, limitedUntilMs: NOW + 20_000, nowMs: NOW }), 20_000);
  assert.equal(nextPollDelay({ lastDoneMs: NOW - 2000, intervalMs: 5000, limitedUntilMs: NOW - 1, nowMs: NOW }), 3000);
});
