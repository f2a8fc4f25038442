// node --test: the event-stream parser the playground reads answers with.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sseParser } from '../src/sse.js';

function parse(chunks) {
  const events = [];
  const parser = sseParser((data) => events.push(data));
  for (const chunk of chunks) parser.push(chunk);
  parser.end();
  return events;
}

test('events split across chunks, comments and CRLF', () => {
  const stream = ': keep-alive\r\n\r\ndata: {"a":1}\r\n\r\ndata: {"b":2}\n\ndata: [DONE]\n\n';
  const expected = ['{"a":1}', '{"b":2}', '[DONE]'];
  assert.deepEqual(parse([stream]), expected);
  assert.deepEqual(parse(stream.split('')), expected); // one character at a time, \r and \n apart
});

test('multi-line data, no space after the colon, other fields ignored, no final blank line', () => {
  assert.deepEqual(parse(['event: x\nid: 3\ndata:one\ndata: two\n\nretry: 5\ndata: last']), ['one\ntwo', 'last']);
});
