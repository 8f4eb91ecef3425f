/** One Server-Sent Events message: `event:` (or `message`), `data:` lines joined, last `id:`. */
export interface SseMessage {
  event: string;
  data: string;
  id: string | undefined;
}

/**
 * Reads Server-Sent Events from a fetch body (WHATWG HTML §9.2): a tiny parser, so that the
 * client can send headers (`Authorization`, `Last-Event-ID`), which `EventSource` cannot, and
 * so that Node needs no `EventSource`. Lines end with LF or CRLF; `:` lines are comments.
 * Ends when the body ends; cancels the body when the caller stops early.
 */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let data: string[] = [];
  let event = '';
  let id: string | undefined;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, buffer[end - 1] === '\r' ? end - 1 : end);
        buffer = buffer.slice(end + 1);
        if (line === '') {
          if (data.length > 0) yield { event: event || 'message', data: data.join('\n'), id };
          data = [];
          event = '';
        } else if (!line.startsWith(':')) {
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? '' : line.slice(line[colon + 1] === ' ' ? colon + 2 : colon + 1);
          if (field === 'data') data.push(text);
          else if (field === 'event') event = text;
          else if (field === 'id') id = text;
        }
      }
    }
  } finally {
    // Releases the connection when the caller stops before the end; a no-op after it.
    reader.cancel().catch(() => undefined);
  }
}
