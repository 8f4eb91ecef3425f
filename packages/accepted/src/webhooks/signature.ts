import {
  createHmac,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign as signBytes,
  timingSafeEqual,
  verify as verifyBytes,
  type KeyObject,
} from 'node:crypto';
import { AcceptedError } from '../domain/errors.ts';

/**
 * Standard Webhooks 1.0 signatures (docs/webhooks-receiving.md).
 *
 * Every delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds of this attempt) and
 * `webhook-signature`: a space-separated list of `v1,<base64 HMAC-SHA256>` and
 * `v1a,<base64 ed25519>` signatures of `${id}.${timestamp}.${body}`, one per secret in use, so
 * that a secret can be rotated without a moment when receivers reject deliveries.
 *
 * Hashing, signing and comparing go through the small functions under "Primitives"; key import
 * and generation use node:crypto KeyObjects. The exported API takes and returns only strings,
 * bytes and plain objects, so an edge or browser build can keep it and swap the crypto.
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

/** Size of the HMAC keys made by {@link generateWebhookSecret}. */
const SECRET_BYTES = 32;
/** The spec asks for 24 to 64 random bytes in a signing secret. */
const MIN_SECRET_BYTES = 24;
const MAX_SECRET_BYTES = 64;
const ED25519_KEY_BYTES = 32;
/** DER header of a PKCS#8 ed25519 private key; the 32-byte seed follows it. */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
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

/** What to sign: one delivery attempt. */
export interface WebhookSignInput {
  /** The message id, the same on every attempt; may not contain `.`. */
  id: string;
  /** Unix seconds of this attempt. */
  timestamp: number;
  /** The exact bytes that will be sent. */
  body: string | Buffer;
  /** `whsec_` secrets (HMAC, `v1`) and `whsk_` signing keys (ed25519, `v1a`). */
  secrets: readonly string[];
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

/** Thrown by {@link verifyWebhook} for a delivery that must not be trusted. */
export class WebhookVerificationError extends Error {
  override readonly name = 'WebhookVerificationError';
  readonly reason: WebhookVerificationReason;

  constructor(reason: WebhookVerificationReason, message: string) {
    super(message);
    this.reason = reason;
  }
}

// --- Primitives --------------------------------------------------------------------------

function hmacSha256(key: Uint8Array, content: Uint8Array | string): Buffer {
  return createHmac('sha256', key).update(content).digest();
}

function ed25519Sign(privateKey: KeyObject, content: Uint8Array): Buffer {
  return signBytes(null, content, privateKey);
}

function ed25519Verify(publicKey: KeyObject, content: Uint8Array, signature: Uint8Array): boolean {
  return verifyBytes(null, content, publicKey, signature);
}

/** True when both hold the same bytes, in time that depends only on their lengths. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

// --- Keys --------------------------------------------------------------------------------

/**
 * A secret or key decoded once: the HMAC key bytes (`v1`), or an ed25519 KeyObject (`v1a`),
 * private when signing and public when verifying.
 */
type DecodedKey = { scheme: 'v1'; key: Buffer } | { scheme: 'v1a'; key: KeyObject };

function invalidSecret(message: string): AcceptedError {
  return new AcceptedError('VALIDATION_FAILED', message, {
    fix: `Use a secret made by generateWebhookSecret() (${WEBHOOK_SECRET_PREFIX}…) or a key pair made by generateSigningKeyPair() (${SIGNING_KEY_PREFIX}… to sign, ${PUBLIC_KEY_PREFIX}… to verify).`,
  });
}

/** The bytes of a base64 string, or an error naming `what`. */
function decodeBase64(encoded: string, what: string): Buffer {
  if (!BASE64.test(encoded)) throw invalidSecret(`The ${what} is not valid base64.`);
  return Buffer.from(encoded, 'base64');
}

function hmacKey(encoded: string, minBytes: number): Buffer {
  const key = decodeBase64(encoded, 'webhook secret');
  if (key.length < minBytes || key.length > MAX_SECRET_BYTES) {
    throw invalidSecret(
      `A webhook secret must hold ${minBytes} to ${MAX_SECRET_BYTES} bytes; this one holds ${key.length}.`,
    );
  }
  return key;
}

function privateKeyFromSeed(seed: Buffer): KeyObject {
  return createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
}

function publicKeyFromRaw(raw: Buffer): KeyObject {
  return createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') },
    format: 'jwk',
  });
}

/** The raw 32 bytes of an ed25519 public key. */
function rawPublicKey(key: KeyObject): Buffer {
  const { x } = key.export({ format: 'jwk' });
  if (x === undefined) throw new TypeError('Not an ed25519 public key.');
  return Buffer.from(x, 'base64url');
}

/** `whsk_`: the 32-byte seed, optionally followed by its public key (which must match). */
function ed25519PrivateKey(encoded: string): KeyObject {
  const bytes = decodeBase64(encoded, 'signing key');
  if (bytes.length !== ED25519_KEY_BYTES && bytes.length !== 2 * ED25519_KEY_BYTES) {
    throw invalidSecret(
      `A ${SIGNING_KEY_PREFIX} key must hold 64 bytes; this one holds ${bytes.length}.`,
    );
  }
  const key = privateKeyFromSeed(bytes.subarray(0, ED25519_KEY_BYTES));
  const given = bytes.subarray(ED25519_KEY_BYTES);
  if (given.length > 0 && !given.equals(rawPublicKey(createPublicKey(key)))) {
    throw invalidSecret(
      `The public half of this ${SIGNING_KEY_PREFIX} key does not match its seed.`,
    );
  }
  return key;
}

function ed25519PublicKey(encoded: string): KeyObject {
  const bytes = decodeBase64(encoded, 'public key');
  if (bytes.length !== ED25519_KEY_BYTES) {
    throw invalidSecret(
      `A ${PUBLIC_KEY_PREFIX} key must hold 32 bytes; this one holds ${bytes.length}.`,
    );
  }
  return publicKeyFromRaw(bytes);
}

function toSigningKey(secret: string): DecodedKey {
  if (secret.startsWith(WEBHOOK_SECRET_PREFIX)) {
    return {
      scheme: 'v1',
      key: hmacKey(secret.slice(WEBHOOK_SECRET_PREFIX.length), MIN_SECRET_BYTES),
    };
  }
  if (secret.startsWith(SIGNING_KEY_PREFIX)) {
    return { scheme: 'v1a', key: ed25519PrivateKey(secret.slice(SIGNING_KEY_PREFIX.length)) };
  }
  throw invalidSecret(
    `A webhook signing secret must start with ${WEBHOOK_SECRET_PREFIX} or ${SIGNING_KEY_PREFIX}.`,
  );
}

/** `whsec_` or bare base64 (HMAC), or `whpk_` (ed25519). */
function toVerifyingKey(secret: string): DecodedKey {
  if (secret.startsWith(PUBLIC_KEY_PREFIX)) {
    return { scheme: 'v1a', key: ed25519PublicKey(secret.slice(PUBLIC_KEY_PREFIX.length)) };
  }
  if (secret.startsWith(SIGNING_KEY_PREFIX)) {
    throw invalidSecret(
      `Verify with the ${PUBLIC_KEY_PREFIX} public key; the ${SIGNING_KEY_PREFIX} key stays with the sender.`,
    );
  }
  const encoded = secret.startsWith(WEBHOOK_SECRET_PREFIX)
    ? secret.slice(WEBHOOK_SECRET_PREFIX.length)
    : secret;
  return { scheme: 'v1', key: hmacKey(encoded, 1) };
}

/** A new HMAC secret: `whsec_` + base64 of 32 random bytes. */
export function generateWebhookSecret(): string {
  return WEBHOOK_SECRET_PREFIX + randomBytes(SECRET_BYTES).toString('base64');
}

/** A new ed25519 pair: the `whsk_` key signs, the `whpk_` key is given to receivers. */
export function generateSigningKeyPair(): { secretKey: string; publicKey: string } {
  const { privateKey } = generateKeyPairSync('ed25519');
  const { d, x } = privateKey.export({ format: 'jwk' });
  if (d === undefined || x === undefined) throw new TypeError('ed25519 export lost the key.');
  const seed = Buffer.from(d, 'base64url');
  const publicKey = Buffer.from(x, 'base64url');
  return {
    secretKey: SIGNING_KEY_PREFIX + Buffer.concat([seed, publicKey]).toString('base64'),
    publicKey: PUBLIC_KEY_PREFIX + publicKey.toString('base64'),
  };
}

// --- Signing -----------------------------------------------------------------------------

function checkId(id: string): void {
  if (id === '' || id.includes('.')) {
    throw new AcceptedError(
      'VALIDATION_FAILED',
      'A webhook id must be non-empty and hold no ".".',
      {
        fix: 'The id is part of the signed content `${id}.${timestamp}.${body}`; use an id without dots.',
      },
    );
  }
}

function checkTimestamp(timestamp: number): void {
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new AcceptedError(
      'VALIDATION_FAILED',
      'A webhook timestamp must be whole Unix seconds.',
      {
        fix: 'Pass Math.floor(Date.now() / 1000).',
      },
    );
  }
}

/** `${id}.${timestamp}.${body}` as bytes. */
function signedContent(id: string, timestamp: string, body: string | Uint8Array): Buffer {
  const head = `${id}.${timestamp}.`;
  if (typeof body === 'string') return Buffer.from(head + body, 'utf8');
  return Buffer.concat([Buffer.from(head, 'utf8'), body]);
}

/** At least one secret, each decoded by `decode`. */
function decodeAll(
  secrets: readonly string[],
  decode: (secret: string) => DecodedKey,
): DecodedKey[] {
  if (secrets.length === 0) throw invalidSecret('At least one webhook secret or key is needed.');
  return secrets.map((secret) => decode(secret));
}

function signWith(key: DecodedKey, content: Buffer): string {
  if (key.scheme === 'v1') return `v1,${hmacSha256(key.key, content).toString('base64')}`;
  return `v1a,${ed25519Sign(key.key, content).toString('base64')}`;
}

/** The `webhook-signature` value: one signature per key, space-separated, in order. */
function signAll(
  keys: readonly DecodedKey[],
  id: string,
  timestamp: number,
  body: string | Buffer,
): string {
  checkId(id);
  checkTimestamp(timestamp);
  const content = signedContent(id, String(timestamp), body);
  return keys.map((key) => signWith(key, content)).join(' ');
}

/**
 * Signs deliveries for one endpoint: decodes its secrets once, then signs each attempt with
 * all of them. Build one per endpoint secret set and keep it while the set is unchanged.
 */
export class WebhookSigner {
  private readonly keys: readonly DecodedKey[];

  /** `secrets`: `whsec_` and `whsk_` values, in the order their signatures will appear. */
  constructor(secrets: readonly string[]) {
    this.keys = decodeAll(secrets, toSigningKey);
  }

  /** The `webhook-signature` value for this attempt. */
  sign(id: string, timestamp: number, body: string | Buffer): string {
    return signAll(this.keys, id, timestamp, body);
  }

  /** The three Standard Webhooks headers for this attempt. */
  headers(id: string, timestamp: number, body: string | Buffer): Record<string, string> {
    return {
      [WEBHOOK_ID_HEADER]: id,
      [WEBHOOK_TIMESTAMP_HEADER]: String(timestamp),
      [WEBHOOK_SIGNATURE_HEADER]: this.sign(id, timestamp, body),
    };
  }
}

/** Recently used secrets, decoded, for the functions below; the oldest leaves first. */
const SIGNING_KEY_CACHE_SIZE = 256;
const signingKeys = new Map<string, DecodedKey>();

function cachedSigningKey(secret: string): DecodedKey {
  let key = signingKeys.get(secret);
  if (key === undefined) {
    key = toSigningKey(secret);
    if (signingKeys.size >= SIGNING_KEY_CACHE_SIZE) {
      const oldest = signingKeys.keys().next();
      if (oldest.done !== true) signingKeys.delete(oldest.value);
    }
    signingKeys.set(secret, key);
  }
  return key;
}

/**
 * The `webhook-signature` value: one signature per secret (`whsec_` → `v1,`, `whsk_` → `v1a,`),
 * space-separated, in the order given. Decoded secrets are cached, so calling this for every
 * attempt is cheap; {@link WebhookSigner} does the same without the shared cache.
 */
export function signatureHeader(input: WebhookSignInput): string {
  const keys = decodeAll(input.secrets, cachedSigningKey);
  return signAll(keys, input.id, input.timestamp, input.body);
}

/** `webhook-id`, `webhook-timestamp` and `webhook-signature` for one attempt. */
export function webhookHeaders(input: WebhookSignInput): Record<string, string> {
  return {
    [WEBHOOK_ID_HEADER]: input.id,
    [WEBHOOK_TIMESTAMP_HEADER]: String(input.timestamp),
    [WEBHOOK_SIGNATURE_HEADER]: signatureHeader(input),
  };
}

// --- Verifying ---------------------------------------------------------------------------

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
  keys: readonly DecodedKey[],
  entries: readonly { version: string; signature: Buffer }[],
  content: Buffer,
): boolean {
  for (const key of keys) {
    if (key.scheme === 'v1') {
      const expected = hmacSha256(key.key, content);
      for (const entry of entries) {
        if (entry.version === 'v1' && sameBytes(entry.signature, expected)) return true;
      }
    } else {
      for (const entry of entries) {
        if (entry.version === 'v1a' && ed25519Verify(key.key, content, entry.signature)) {
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
 * when it must not be trusted. `secretOrKey` is one or several `whsec_` secrets (or their bare
 * base64) and `whpk_` public keys: the delivery passes when any signature in the header
 * matches any of them. `rawBody` must be the bytes as received, before any JSON parsing.
 */
export function verifyWebhook(
  secretOrKey: string | readonly string[],
  headers: WebhookHeaders,
  rawBody: string | Buffer | Uint8Array,
  options: VerifyWebhookOptions = {},
): WebhookPayload {
  const secrets: readonly string[] = typeof secretOrKey === 'string' ? [secretOrKey] : secretOrKey;
  const keys = decodeAll(secrets, toVerifyingKey);
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
