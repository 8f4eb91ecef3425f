import { AcceptedError } from '../domain/errors.ts';

export function emptyJsonBody(): AcceptedError {
  return new AcceptedError('MALFORMED_JSON', 'The body is empty but JSON was announced.', {
    fix: 'Send a JSON object, such as {"type": "demo.echo", "input": {}}.',
  });
}

/** A JSON syntax error (or a refused prototype key), with the position when the parser says. */
export function malformedJson(error: unknown): AcceptedError {
  const message = error instanceof Error ? error.message : String(error);
  const at = /position (\d+)/.exec(message)?.[1];
  return new AcceptedError('MALFORMED_JSON', `The body is not valid JSON: ${message}.`, {
    details: at === undefined ? {} : { position: Number(at) },
    fix:
      at === undefined
        ? 'Check the JSON syntax (quotes, commas, brackets).'
        : `Check the JSON syntax near character ${at}.`,
  });
}

/**
 * What Node's HTTP parser refused before any route saw the request (the `clientError` event),
 * in our vocabulary; null when the client has gone (a reset), when there is no one to answer.
 */
export function fromClientError(error: { code?: string }): AcceptedError | null {
  switch (error.code) {
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ECONNABORTED':
      return null;
    case 'HPE_HEADER_OVERFLOW':
      return new AcceptedError(
        'HEADERS_TOO_LARGE',
        'The request line and headers are larger than the server allows.',
        { fix: 'Send shorter headers (cookies, tokens) and a shorter URL.' },
      );
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new AcceptedError(
        'REQUEST_TIMEOUT',
        'The request (its headers, or its body) did not arrive in time.',
        { fix: 'Send the whole request at once; check the network between client and server.' },
      );
    default:
      return new AcceptedError('MALFORMED_REQUEST', 'The HTTP request could not be parsed.', {
        details: error.code === undefined ? {} : { reason: error.code },
        fix: 'Send a valid HTTP/1.1 request (request line, headers, CRLF line ends, a body that matches its Content-Length or chunked framing).',
      });
  }
}

/** Error codes of a socket or stream the client closed (a reset, a broken pipe, an abort). */
const CLIENT_GONE_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ERR_STREAM_DESTROYED',
]);

/**
 * True when `error` says the client went away (an aborted upload, a closed socket) and the
 * socket is indeed gone: nothing failed on our side, and there is no one to answer.
 */
export function isClientGone(
  error: { code?: string; message?: string },
  socket: { destroyed: boolean } | null | undefined,
): boolean {
  const gone = socket === null || socket === undefined || socket.destroyed;
  return gone && (CLIENT_GONE_CODES.has(error.code ?? '') || error.message === 'aborted');
}

/** What the HTTP framework raised (body limits, media types) in our vocabulary. */
export function fromFrameworkError(error: {
  code?: string;
  statusCode?: number;
  message: string;
}): AcceptedError | null {
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AcceptedError('PAYLOAD_TOO_LARGE', 'The request body is larger than the limit.', {
        fix: 'Send a smaller body; store large payloads elsewhere and pass a reference.',
      });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AcceptedError('UNSUPPORTED_MEDIA_TYPE', 'The body must be JSON.', {
        fix: 'Send Content-Type: application/json with a JSON body.',
      });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return emptyJsonBody();
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AcceptedError('MALFORMED_JSON', 'The body length does not match Content-Length.');
    case 'FST_ERR_BAD_URL':
      return new AcceptedError('MALFORMED_REQUEST', 'The URL is not valid.', {
        fix: 'Percent-encode the path and query as RFC 3986 says (UTF-8, %XX).',
      });
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new AcceptedError('ROUTE_NOT_FOUND', 'No route for a path segment this long.', {
        fix: 'See /v1/openapi.json or docs/http.md for the routes.',
      });
    default:
      break;
  }
  if (error.statusCode === 404) {
    return new AcceptedError('ROUTE_NOT_FOUND', error.message);
  }
  return null;
}
