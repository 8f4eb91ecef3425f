import { createHmac, createPublicKey, timingSafeEqual, verify, type KeyObject } from 'node:crypto';

/**
 * `@accepted/client/webhooks`: checks a webhook delivery from Accepted (Standard Webhooks 1.0,
 * docs/webhooks-receiving.md). Node.js only: it uses node:crypto, which is why it is a subpath
 * of its own and never part of the browser bundle. This is the one implementation of the
 * receiver's check: `@accepted/server` and `@accepted/server/webhooks` re-export it.
 *
 * Every delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds of this attempt) and
 * `webhook-signature`: a space-separated list of `v1,<base64 HMAC-SHA256>` and
 * `v1a,<base64 ed25519>` signatures of `${id}.${timestamp}.${body}`.
 */

/** Prefix of an HMAC secret: `whsec_` + base64 of the key bytes. */
export const WEBHOOK_SECRET_PREFIX = 'whsec_';
/** Prefix of an ed25519 signing key: `whsk_` + base64 of seed (32 bytes) ‖ public key (32). */
export const SIGNING_KEY_PREFIX = 'whsk_';
/** Prefix of an ed25519 public key: `whpk_` + base64 of the raw 32-byte key. */
export const PUBLIC_KEY_PREFIX = 'whpk_';
/** How far the timestamp of a delivery may be from the receiver's clock, by default. */
export const DEFAULT_TOLERANCE_SECONDS = 300;

export const WEBHOOK_ID_HEADER = 'webhook-id';
export const WEBHOOK_TIMESTAMP_HEADER = 'webhook-timestamp';
export const WEBHOOK_SIGNATURE_HEADER = 'webhook-signature';

/** The spec asks for at most 64 random bytes in a signing secret. */
const MAX_SECRET_BYTES = 64;
const ED25519_KEY_BYTES = 32;
/** Standard base64, padded or not. */
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** What a verified delivery says: the body of every webhook sent by Accepted. */
export interface WebhookPayload {
  /** Dot-separated event type, such as `operation.succeeded`. */
  type: string;
  /** When the event happened, RFC 3339. */
  timestamp: string;
  data: unknown;
}

export interface VerifyWebhookOptions {
  /** Largest accepted distance between the timestamp and `now`, in seconds; 300 by default. */
  toleranceSeconds?: number;
  /** The receiver's clock, epoch milliseconds; `Date.now()` by default. */
  now?: number;
}

/** Headers as a fetch `Headers`, or a plain object such as Node's `IncomingHttpHeaders`. */
export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

/** Why a delivery was rejected; stable, safe to log and to branch on. */
export type WebhookVerificationReason =
  | 'missing_headers'
  | 'invalid_timestamp'
  | 'timestamp_too_old'
  | 'timestamp_too_new'
  | 'no_matching_signature'
  | 'invalid_payload';

/** Thrown by {@link verifyWebhook} for a delivery that must not be trusted (answer 4xx). */
export class WebhookVerificationError extends Error {
  override readonly name = 'WebhookVerificationError';
  readonly reason: WebhookVerificationReason;

  constructor(reason: WebhookVerificationReason, message: string) {
    super(message);
    this.reason = reason;
  }
}

/**
 * Thrown when a secret or key cannot be used at all (not base64, wrong size, a `whsk_` signing
 * key given to a receiver): a mistake in the receiver's configuration, not in the delivery, so
 * answer 500 rather than 4xx. `@accepted/server` turns it into an `AcceptedError`
 * `VALIDATION_FAILED`.
 */
export class WebhookKeyError extends Error {
  override readonly name = 'WebhookKeyError';
  readonly code = 'VALIDATION_FAILED';
  /** How to correct the secret. */
  readonly fix = `Use a secret made by generateWebhookSecret() (${WEBHOOK_SECRET_PREFIX}…) or a key pair made by generateSigningKeyPair() (${SIGNING_KEY_PREFIX}… to sign, ${PUBLIC_KEY_PREFIX}… to verify).`;
}

// --- Building blocks, shared with the signer of `@accepted/server/webhooks` ---------------

/** HMAC-SHA256 of `content` with `key`. */
export function hmacSha256(key: Uint8Array, content: Uint8Array | string): Buffer {
  return createHmac('sha256', key).update(content).digest();
}

/** The signed content, `${id}.${timestamp}.${body}`, as bytes. */
export function signedContent(id: string, timestamp: string, body: string | Uint8Array): Buffer {
  const head = `${id}.${timestamp}.`;
  if (typeof body === 'string') return Buffer.from(head + body, 'utf8');
  return Buffer.concat([Buffer.from(head, 'utf8'), body]);
}

/** The bytes of a base64 string; {@link WebhookKeyError} naming `what` when it is not base64. */
export function decodeKeyBytes(encoded: string, what: string): Buffer {
  if (!BASE64.test(encoded)) throw new WebhookKeyError(`The ${what} is not valid base64.`);
  return Buffer.from(encoded, 'base64');
}

/** The bytes of an HMAC secret (base64, without its prefix), `minBytes` to 64 of them. */
export function decodeHmacKey(encoded: string, minBytes: number): Buffer {
  const key = decodeKeyBytes(encoded, 'webhook secret');
  if (key.length < minBytes || key.length > MAX_SECRET_BYTES) {
    throw new WebhookKeyError(
      `A webhook secret must hold ${minBytes} to ${MAX_SECRET_BYTES} bytes; this one holds ${key.length}.`,
    );
  }
  return key;
}

// --- Verifying -----------------------------------------------------------------------------

/** A secret decoded once: HMAC key bytes (`v1`) or an ed25519 public key (`v1a`). */
type VerifyingKey = { scheme: 'v1'; key: Buffer } | { scheme: 'v1a'; key: KeyObject };

/** `whsec_` or bare base64 (HMAC), or `whpk_` (ed25519). */
function toVerifyingKey(secret: string): VerifyingKey {
  if (secret.startsWith(PUBLIC_KEY_PREFIX)) {
    const raw = decodeKeyBytes(secret.slice(PUBLIC_KEY_PREFIX.length), 'public key');
    if (raw.length !== ED25519_KEY_BYTES) {
      throw new WebhookKeyError(
        `A ${PUBLIC_KEY_PREFIX} key must hold 32 bytes; this one holds ${raw.length}.`,
      );
    }
    const jwk = { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') };
    return { scheme: 'v1a', key: createPublicKey({ key: jwk, format: 'jwk' }) };
  }
  if (secret.startsWith(SIGNING_KEY_PREFIX)) {
    throw new WebhookKeyError(
      `Verify with the ${PUBLIC_KEY_PREFIX} public key; the ${SIGNING_KEY_PREFIX} key stays with the sender.`,
    );
  }
  const encoded = secret.startsWith(WEBHOOK_SECRET_PREFIX)
    ? secret.slice(WEBHOOK_SECRET_PREFIX.length)
    : secret;
  return { scheme: 'v1', key: decodeHmacKey(encoded, 1) };
}

function isFetchHeaders(headers: WebhookHeaders): headers is Headers {
  return typeof (headers as Partial<Headers>).get === 'function';
}

/** One header, whatever the case of its name; several values are joined by spaces. */
function header(headers: WebhookHeaders, name: string): string | undefined {
  if (isFetchHeaders(headers)) return headers.get(name) ?? undefined;
  for (const [key, value] of Object.entries(headers)) {
    if (value === undefined || key.toLowerCase() !== name) continue;
    return typeof value === 'string' ? value : value.join(' ');
  }
  return undefined;
}

/** The timestamp in seconds, checked against the receiver's clock. */
function checkFreshness(value: string, options: VerifyWebhookOptions): void {
  if (!/^\d{1,15}$/.test(value)) {
    throw new WebhookVerificationError(
      'invalid_timestamp',
      'The webhook-timestamp is not Unix seconds.',
    );
  }
  const timestamp = Number(value);
  const now = Math.floor((options.now ?? Date.now()) / 1000);
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  if (now - timestamp > tolerance) {
    throw new WebhookVerificationError('timestamp_too_old', 'The webhook-timestamp is too old.');
  }
  if (timestamp - now > tolerance) {
    throw new WebhookVerificationError(
      'timestamp_too_new',
      'The webhook-timestamp is in the future.',
    );
  }
}

/** The `version,base64` entries of a `webhook-signature` value. */
function parseSignatures(value: string): { version: string; signature: Buffer }[] {
  const entries: { version: string; signature: Buffer }[] = [];
  for (const part of value.split(/\s+/)) {
    const comma = part.indexOf(',');
    if (comma <= 0) continue;
    entries.push({
      version: part.slice(0, comma),
      signature: Buffer.from(part.slice(comma + 1), 'base64'),
    });
  }
  return entries;
}

/** True when any entry is a valid signature of `content` by any key of its scheme. */
function anySignatureMatches(
  keys: readonly VerifyingKey[],
  entries: readonly { version: string; signature: Buffer }[],
  content: Buffer,
): boolean {
  for (const key of keys) {
    if (key.scheme === 'v1') {
      const expected = hmacSha256(key.key, content);
      for (const entry of entries) {
        if (
          entry.version === 'v1' &&
          entry.signature.length === expected.length &&
          timingSafeEqual(entry.signature, expected)
        ) {
          return true;
        }
      }
    } else {
      for (const entry of entries) {
        if (entry.version === 'v1a' && verify(null, content, key.key, entry.signature)) {
          return true;
        }
      }
    }
  }
  return false;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The body as a Buffer, without copying one that already is. */
function toBuffer(body: string | Uint8Array): Buffer {
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  return Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

function parsePayload(body: Buffer): WebhookPayload {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new WebhookVerificationError('invalid_payload', 'The webhook body is not valid JSON.');
  }
  if (
    !isRecord(parsed) ||
    typeof parsed.type !== 'string' ||
    typeof parsed.timestamp !== 'string'
  ) {
    throw new WebhookVerificationError(
      'invalid_payload',
      'The webhook body is not an object with a string type and timestamp.',
    );
  }
  return { type: parsed.type, timestamp: parsed.timestamp, data: parsed.data };
}

/**
 * Checks a received delivery and returns its payload; throws {@link WebhookVerificationError}
 * when it must not be trusted, and {@link WebhookKeyError} when a secret cannot be used.
 * `secretOrKey` is one or several `whsec_` secrets (or their bare base64) and `whpk_` public
 * keys: the delivery passes when any signature in the header matches any of them. `rawBody`
 * must be the bytes as received, before any JSON parsing.
 */
export function verifyWebhook(
  secretOrKey: string | readonly string[],
  headers: WebhookHeaders,
  rawBody: string | Uint8Array,
  options: VerifyWebhookOptions = {},
): WebhookPayload {
  const secrets: readonly string[] = typeof secretOrKey === 'string' ? [secretOrKey] : secretOrKey;
  if (secrets.length === 0)
    throw new WebhookKeyError('At least one webhook secret or key is needed.');
  const keys = secrets.map(toVerifyingKey);
  const id = header(headers, WEBHOOK_ID_HEADER);
  const timestamp = header(headers, WEBHOOK_TIMESTAMP_HEADER);
  const signature = header(headers, WEBHOOK_SIGNATURE_HEADER);
  if (!id || !timestamp || !signature) {
    throw new WebhookVerificationError(
      'missing_headers',
      'The webhook-id, webhook-timestamp and webhook-signature headers are all required.',
    );
  }
  checkFreshness(timestamp, options);
  const body = toBuffer(rawBody);
  const content = signedContent(id, timestamp, body);
  if (!anySignatureMatches(keys, parseSignatures(signature), content)) {
    throw new WebhookVerificationError(
      'no_matching_signature',
      'No signature in webhook-signature matches the given secrets.',
    );
  }
  return parsePayload(body);
}
