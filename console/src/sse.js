// Streaming chat completions from an instance's OpenAI-compatible endpoint: fetch + ReadableStream
// + a small text/event-stream parser (EventSource cannot POST nor send a bearer token).

/** A parser for text/event-stream: push() decoded text as it arrives, end() at the end; onData(data) per event. */
export function sseParser(onData) {
  let buffer = '';
  let data = [];
  const line = (text) => {
    if (text === '') {
      if (data.length) onData(data.join('\n'));
      data = [];
      return;
    }
    if (text.startsWith(':')) return; // a comment (keep-alive)
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data.push(value);
  };
  return {
    push(text) {
      buffer += text;
      for (;;) {
        // \r\n, \n, or a lone \r that is not the last character (its \n may be in the next chunk)
        const newline = /\r\n|\n|\r(?!$)/.exec(buffer);
        if (!newline) break;
        line(buffer.slice(0, newline.index));
        buffer = buffer.slice(newline.index + newline[0].length);
      }
    },
    end() {
      if (buffer.endsWith('\r')) buffer = buffer.slice(0, -1);
      if (buffer) line(buffer);
      buffer = '';
      line('');
    },
  };
}

/** The message of an OpenAI-shaped error body, or the text itself. */
function errorMessage(status, text) {
  try {
    const body = JSON.parse(text);
    if (body?.error?.message) return `${status}: ${body.error.message}`;
  } catch {
    // not JSON
  }
  return `${status}: ${text.slice(0, 300) || 'no details'}`;
}

/**
 * POST /v1/chat/completions with stream: true; onText(piece) for each piece of the answer.
 * Resolves to {firstTokenMs, totalMs, usage, finishReason}; rejects with a readable Error.
 */
export async function streamChat({ endpoint, token, body, signal, onText }) {
  const started = performance.now();
  let response;
  try {
    response = await fetch(`${endpoint.replace(/\/+$/, '')}/v1/chat/completions`, {
      method: 'POST',
      mode: 'cors',
      credentials: 'omit',
      cache: 'no-store',
      referrerPolicy: 'no-referrer',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', Accept: 'text/event-stream' },
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
      signal,
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new Error(
      `Could not reach ${endpoint} (${error.message}). Is the gateway running, and does it answer CORS requests from this page?`,
    );
  }
  if (!response.ok) throw new Error(errorMessage(response.status, await response.text()));
  if (!response.body) throw new Error('The endpoint answered without a body.');

  let firstTokenMs = null;
  let usage = null;
  let finishReason = null;
  let failure = null;
  const parser = sseParser((data) => {
    if (data === '[DONE]' || failure) return;
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      failure = new Error(`The stream carried something that is not JSON: ${data.slice(0, 120)}`);
      return;
    }
    if (event.error) {
      failure = new Error(event.error.message ?? 'The stream ended with an error.');
      return;
    }
    const choice = event.choices?.[0];
    const text = choice?.delta?.content;
    if (text) {
      if (firstTokenMs === null) firstTokenMs = performance.now() - started;
      onText(text);
    }
    if (choice?.finish_reason) finishReason = choice.finish_reason;
    if (event.usage) usage = event.usage;
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.push(value);
    if (failure) {
      reader.cancel().catch(() => {});
      break;
    }
  }
  parser.end();
  if (failure) throw failure;
  return { firstTokenMs, totalMs: performance.now() - started, usage, finishReason };
}
