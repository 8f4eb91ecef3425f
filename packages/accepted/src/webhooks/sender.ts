import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { inspectWebhookUrl, type AddressPolicy } from './ssrf.ts';

/**
 * The outbound HTTP client of webhook deliveries (standards §12, §13): one POST per attempt,
 * over keep-alive connections, to addresses the {@link AddressPolicy} allows.
 *
 * - Host names are resolved by the agents' `lookup` hook at each new connection (A and AAAA);
 *   every address is judged, and the socket connects to the addresses that were judged, so
 *   there is no second lookup for a rebinding DNS server to answer differently.
 * - IP-literal hosts are judged before the request (Node connects to them without a lookup).
 * - Redirects are never followed: a 3xx is an answer like any other, and not `ok`.
 * - At most {@link RESPONSE_BODY_LIMIT} bytes of the answer are kept; a short remainder is
 *   drained so the connection can be reused, a long one closes it.
 * - One timer covers the whole exchange (connect, request, answer).
 * - Network outcomes never throw: they come back in `error`.
 */

/** Bytes of the response body kept in {@link SendResult.body}. */
export const RESPONSE_BODY_LIMIT = 4096;
/** Bytes past the kept ones read and dropped so the connection can be reused; more closes it. */
const DRAIN_LIMIT = 64 * 1024;
export const DEFAULT_SEND_TIMEOUT_MS = 15_000;
export const DEFAULT_MAX_SOCKETS = 32;
export const DEFAULT_USER_AGENT = 'Accepted-Webhooks/1.0';
/** Idle keep-alive connections are closed after this long, before most servers close them. */
const IDLE_SOCKET_MS = 4_000;
/** Retries of a request whose reused connection turned out to be closed by the server. */
const STALE_SOCKET_RETRIES = 2;
/** Parsed targets kept, by URL. */
const TARGET_CACHE_SIZE = 1024;

export type SendErrorCode =
  | 'BLOCKED_ADDRESS'
  | 'DNS_FAILED'
  | 'CONNECT_FAILED'
  | 'TIMEOUT'
  | 'TLS_FAILED'
  | 'RESET'
  | 'ABORTED';

export interface SendError {
  code: SendErrorCode;
  message: string;
  /** For BLOCKED_ADDRESS: the rule of the blocked range (see ssrf.ts) or of the URL. */
  rule?: string;
}

export interface SendResult {
  /** A 2xx answer arrived in full (no `error`). */
  ok: boolean;
  /** Status of the answer; null when none arrived. */
  status: number | null;
  /** Response headers, lower-case names, repeated ones joined with `, `. */
  headers: Record<string, string>;
  /** The first {@link RESPONSE_BODY_LIMIT} bytes of the response body, as UTF-8. */
  body: string;
  durationMs: number;
  error: SendError | null;
  /** From `Retry-After` (delay-seconds or HTTP-date), in ms; null when absent or unreadable. */
  retryAfterMs: number | null;
}

export interface SendRequest {
  url: string;
  headers: Record<string, string>;
  body: string | Buffer;
  /** Overrides the sender's timeout for this request. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface WebhookSenderOptions {
  policy: AddressPolicy;
  /** Whole-request timeout, connect to last byte kept (default 15 s). */
  timeoutMs?: number;
  /** Connections per origin (default 32). */
  maxSockets?: number;
  userAgent?: string;
}

/** A URL ready to be called, or why it may not be. */
type Target =
  | {
      secure: boolean;
      /** An IP literal (looked up by nobody) or a host name (looked up by the agent's hook). */
      host: string;
      port: number;
      path: string;
      hostHeader: string;
    }
  | { blocked: SendError };

/** A network error with the code the sender reports, made by the lookup hook. */
export class SenderError extends Error {
  constructor(
    readonly sendCode: SendErrorCode,
    message: string,
    readonly rule?: string,
  ) {
    super(message);
  }
}

/**
 * Milliseconds to wait from a `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110
 * §10.2.3); null when absent or unreadable.
 */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | null {
  if (value === undefined) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

const TLS_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'HOSTNAME_MISMATCH',
]);
const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'EADDRNOTAVAIL',
  'ETIMEDOUT',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);

/** The sender's name for a network error. */
function classify(error: Error & { code?: unknown; syscall?: unknown }): SendErrorCode {
  if (error instanceof SenderError) return error.sendCode;
  const code = typeof error.code === 'string' ? error.code : '';
  if (error.syscall === 'getaddrinfo' || code.startsWith('EAI_') || code === 'ENOTFOUND') {
    return 'DNS_FAILED';
  }
  if (
    TLS_CODES.has(code) ||
    code.startsWith('ERR_TLS_') ||
    code.startsWith('ERR_SSL_') ||
    code.startsWith('ERR_OSSL_') ||
    'library' in error
  ) {
    return 'TLS_FAILED';
  }
  if (CONNECT_CODES.has(code) || error.syscall === 'connect') return 'CONNECT_FAILED';
  return 'RESET';
}

function flattenHeaders(raw: http.IncomingHttpHeaders): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const name in raw) {
    const value = raw[name];
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return headers;
}

/**
 * The verdict on every address a host name resolved to: the error of the first blocked one
 * (a name with one public and one private address is refused: the socket may use either), or
 * of none at all; null when all may be called.
 */
export function judgeAddresses(
  hostname: string,
  addresses: readonly { address: string }[],
  policy: AddressPolicy,
): SenderError | null {
  if (addresses.length === 0) return new SenderError('DNS_FAILED', `${hostname} has no address.`);
  for (const { address } of addresses) {
    const verdict = policy.check(address);
    if (!verdict.allowed) {
      const message = `${hostname} resolves to ${address}, in a blocked range (${verdict.rule}).`;
      return new SenderError('BLOCKED_ADDRESS', message, verdict.rule);
    }
  }
  return null;
}

/**
 * Sends webhook requests. One keep-alive agent per scheme, shared by every endpoint (pools are
 * per origin); `close()` ends them.
 */
export class WebhookSender {
  private readonly policy: AddressPolicy;
  private readonly timeoutMs: number;
  private readonly userAgent: string;
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent;
  private readonly targets = new Map<string, Target>();

  constructor(options: WebhookSenderOptions) {
    this.policy = options.policy;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_SEND_TIMEOUT_MS;
    this.userAgent = options.userAgent ?? DEFAULT_USER_AGENT;
    const agentOptions = {
      keepAlive: true,
      maxSockets: options.maxSockets ?? DEFAULT_MAX_SOCKETS,
      timeout: IDLE_SOCKET_MS,
      scheduling: 'lifo' as const,
      noDelay: true,
      lookup: this.lookup,
    };
    this.httpAgent = new http.Agent(agentOptions);
    this.httpsAgent = new https.Agent(agentOptions);
  }

  /**
   * The agents' DNS hook: resolves A and AAAA, refuses the connection when any address is
   * blocked, and hands the socket the judged addresses (all when it asks for all, for Happy
   * Eyeballs; the first otherwise).
   */
  private readonly lookup: net.LookupFunction = (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) {
        callback(error, '', 0);
        return;
      }
      const refused = judgeAddresses(hostname, addresses, this.policy);
      const first = addresses[0];
      if (refused || first === undefined) {
        callback(refused ?? new SenderError('DNS_FAILED', `${hostname} has no address.`), '', 0);
        return;
      }
      if (options.all === true) callback(null, addresses);
      else callback(null, first.address, first.family);
    });
  };

  /** Parses and judges a URL once; later sends to it reuse the answer. */
  private target(url: string): Target {
    const known = this.targets.get(url);
    if (known !== undefined) return known;
    const checked = inspectWebhookUrl(url, this.policy, { localhostNames: false });
    let target: Target;
    if ('rule' in checked) {
      target = {
        blocked: { code: 'BLOCKED_ADDRESS', message: checked.message, rule: checked.rule },
      };
    } else {
      const { url: parsed, address } = checked;
      const secure = parsed.protocol === 'https:';
      // The URL parser writes IPv6 hosts in brackets; a literal is connected to as given.
      const bare = parsed.hostname.startsWith('[') ? parsed.hostname.slice(1, -1) : parsed.hostname;
      target = {
        secure,
        host: address === null || net.isIP(bare) !== 0 ? bare : address,
        port: parsed.port === '' ? (secure ? 443 : 80) : Number(parsed.port),
        path: `${parsed.pathname}${parsed.search}`,
        hostHeader: parsed.host,
      };
    }
    if (this.targets.size >= TARGET_CACHE_SIZE) this.targets.clear();
    this.targets.set(url, target);
    return target;
  }

  /** POSTs `body` to `url`. Resolves with the outcome; never rejects for network outcomes. */
  send(request: SendRequest): Promise<SendResult> {
    const started = performance.now();
    const target = this.target(request.url);
    if ('blocked' in target) return Promise.resolve(failure(started, target.blocked));
    if (request.signal?.aborted) {
      return Promise.resolve(
        failure(started, { code: 'ABORTED', message: 'Aborted before sending.' }),
      );
    }
    const headers: Record<string, string> = {
      'user-agent': this.userAgent,
      'content-type': 'application/json',
      ...request.headers,
      host: target.hostHeader,
      'content-length': String(
        typeof request.body === 'string' ? Buffer.byteLength(request.body) : request.body.length,
      ),
    };
    const options: http.RequestOptions = {
      agent: target.secure ? this.httpsAgent : this.httpAgent,
      host: target.host,
      port: target.port,
      path: target.path,
      method: 'POST',
      headers,
    };
    return new Promise((resolve) => {
      new Exchange(target.secure, options, request, started, resolve).start(
        request.timeoutMs ?? this.timeoutMs,
      );
    });
  }

  /** Closes every connection, idle or in use (requests in flight end with RESET). */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}

function failure(started: number, error: SendError): SendResult {
  return {
    ok: false,
    status: null,
    headers: {},
    body: '',
    durationMs: performance.now() - started,
    error,
    retryAfterMs: null,
  };
}

/** One send: the request (and its retries on a stale connection), the answer, the timer. */
class Exchange {
  private req: http.ClientRequest | null = null;
  private res: http.IncomingMessage | null = null;
  private timer: NodeJS.Timeout | null = null;
  private settled = false;
  private retries = 0;
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  private dropped = 0;
  private timeoutMs = 0;

  constructor(
    private readonly secure: boolean,
    private readonly options: http.RequestOptions,
    private readonly request: SendRequest,
    private readonly started: number,
    private readonly resolve: (result: SendResult) => void,
  ) {}

  start(timeoutMs: number): void {
    this.timeoutMs = timeoutMs;
    this.timer = setTimeout(this.onTimeout, timeoutMs);
    this.request.signal?.addEventListener('abort', this.onAbort, { once: true });
    this.issue();
  }

  private issue(): void {
    const req = (this.secure ? https : http).request(this.options);
    this.req = req;
    req.on('response', this.onResponse);
    req.on('error', (error) => this.onRequestError(req, error));
    req.end(this.request.body);
  }

  private readonly onResponse = (res: http.IncomingMessage): void => {
    this.res = res;
    res.on('data', this.onData);
    res.on('end', this.onEnd);
    // After the result is out, errors of the rest of the body only close the connection.
    res.on('error', (error) => this.fail(error));
  };

  private readonly onData = (chunk: Buffer): void => {
    if (this.kept < RESPONSE_BODY_LIMIT) {
      const take = Math.min(chunk.length, RESPONSE_BODY_LIMIT - this.kept);
      this.chunks.push(take === chunk.length ? chunk : chunk.subarray(0, take));
      this.kept += take;
      if (this.kept < RESPONSE_BODY_LIMIT) return;
      this.dropped += chunk.length - take;
      this.settle(null, '');
    } else {
      this.dropped += chunk.length;
    }
    // Enough kept: drain a short remainder for keep-alive, close on a long one.
    if (this.dropped > DRAIN_LIMIT || this.remainingLength() > DRAIN_LIMIT) this.abandon();
  };

  /** Bytes the answer says are still to come, from Content-Length; 0 when unknown. */
  private remainingLength(): number {
    const length = Number(this.res?.headers['content-length'] ?? 0);
    return Number.isFinite(length) ? length - this.kept - this.dropped : 0;
  }

  private readonly onEnd = (): void => {
    this.settle(null, '');
    this.cleanup();
  };

  private onRequestError(req: http.ClientRequest, error: Error): void {
    if (this.settled || req !== this.req) return;
    const code = (error as { code?: unknown }).code;
    if (
      this.res === null &&
      req.reusedSocket &&
      (code === 'ECONNRESET' || code === 'EPIPE') &&
      this.retries < STALE_SOCKET_RETRIES
    ) {
      // The server closed an idle connection as we reused it: nothing was processed.
      this.retries++;
      this.issue();
      return;
    }
    this.fail(error);
  }

  private fail(error: Error): void {
    const rule = error instanceof SenderError ? error.rule : undefined;
    this.settle(classify(error), error.message, rule);
    this.cleanup();
  }

  private readonly onTimeout = (): void => {
    this.timer = null;
    this.settle('TIMEOUT', `No complete answer within ${this.timeoutMs} ms.`);
    this.abandon();
  };

  private readonly onAbort = (): void => {
    this.settle('ABORTED', 'The send was aborted.');
    this.abandon();
  };

  /** Resolves once: the answer so far, and the error when there is one. */
  private settle(code: SendErrorCode | null, message: string, rule?: string): void {
    if (this.settled) return;
    this.settled = true;
    this.request.signal?.removeEventListener('abort', this.onAbort);
    const res = this.res;
    const status = res?.statusCode ?? null;
    const error: SendError | null =
      code === null ? null : rule === undefined ? { code, message } : { code, message, rule };
    const retryAfter = res?.headers['retry-after'];
    this.resolve({
      ok: error === null && status !== null && status >= 200 && status < 300,
      status,
      headers: res === null ? {} : flattenHeaders(res.headers),
      body: this.chunks.length === 0 ? '' : Buffer.concat(this.chunks, this.kept).toString('utf8'),
      durationMs: performance.now() - this.started,
      error,
      retryAfterMs: parseRetryAfter(retryAfter),
    });
  }

  /** Gives up on the connection: it is closed, not reused. */
  private abandon(): void {
    this.cleanup();
    this.res?.destroy();
    this.req?.destroy();
  }

  private cleanup(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.request.signal?.removeEventListener('abort', this.onAbort);
  }
}
