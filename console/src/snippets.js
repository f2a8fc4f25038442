// Ready-made client snippets for an instance's OpenAI-compatible endpoint.

const PROMPT = 'Say hello';

function json(value) {
  return JSON.stringify(value);
}

/** Which endpoint the snippets use: the public one when enabled, else the private one (TLS from the instance's CA). */
export function snippetEndpoint(instance) {
  const publicUrl = instance.endpoints?.public_endpoint_fqdn;
  if (publicUrl) return { url: publicUrl, private: false };
  return { url: instance.endpoints?.private_endpoint_fqdn ?? '', private: true };
}

export function curlSnippet(instance, model) {
  const { url, private: isPrivate } = snippetEndpoint(instance);
  const body = json({ model, messages: [{ role: 'user', content: PROMPT }], max_tokens: 64 });
  return [
    isPrivate ? '# the private endpoint serves TLS from the instance CA (Download CA certificate)' : null,
    `curl -s ${isPrivate ? '--cacert instance-ca.pem ' : ''}${url}/v1/chat/completions \\`,
    '  -H "Authorization: Bearer $DI_TOKEN" \\',
    '  -H "Content-Type: application/json" \\',
    `  -d '${body}'`,
  ]
    .filter((line) => line !== null)
    .join('\n');
}

export function pythonSnippet(instance, model) {
  const { url, private: isPrivate } = snippetEndpoint(instance);
  return [
    'import os',
    '',
    isPrivate ? 'import httpx' : null,
    'from openai import OpenAI',
    '',
    'client = OpenAI(',
    `    base_url=${json(`${url}/v1`)},`,
    '    api_key=os.environ["DI_TOKEN"],',
    isPrivate ? '    http_client=httpx.Client(verify="instance-ca.pem"),  # the instance CA' : null,
    ')',
    'stream = client.chat.completions.create(',
    `    model=${json(model)},`,
    `    messages=[{"role": "user", "content": ${json(PROMPT)}}],`,
    '    stream=True,',
    ')',
    'for chunk in stream:',
    '    if chunk.choices:',
    '        print(chunk.choices[0].delta.content or "", end="", flush=True)',
    'print()',
  ]
    .filter((line) => line !== null)
    .join('\n');
}
