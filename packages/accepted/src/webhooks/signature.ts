import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign as signBytes,
  type KeyObject,
} from 'node:crypto';
import {
  SIGNING_KEY_PREFIX,
  PUBLIC_KEY_PREFIX,
  WEBHOOK_ID_HEADER,
  WEBHOOK_SECRET_PREFIX,
  WEBHOOK_SIGNATURE_HEADER,
  WEBHOOK_TIMESTAMP_HEADER,
  WebhookKeyError,
  decodeHmacKey,
  decodeKeyBytes,
  hmacSha256,
  signedContent,
  verifyWebhook as verifyDelivery,
  type VerifyWebhookOptions,
  type WebhookHeaders,
  type WebhookPayload,
} from '@accepted/client/webhooks';
import { AcceptedError } from '../domain/errors.ts';

/**
 * Standard Webhooks 1.0 signatures (docs/webhooks-receiving.md).
 *
 * Every delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds of this attempt) and
 * `webhook-signature`: a space-separated list of `v1,<base64 HMAC-SHA256>` and
 * `v1a,<base64 ed25519>` signatures of `${id}.${timestamp}.${body}`, one per secret in use, so
 * that a secret can be rotated without a moment when receivers reject deliveries.
 *
 * Signing lives here. The receiver's check, {@link verifyWebhook}, is implemented once, in
 * `@accepted/client/webhooks` (so that a receiver needs only the client), and re-exported here
 * with its key errors turned into `AcceptedError`s.
 */

export {
  DEFAULT_TOLERANCE_SECONDS,
  PUBLIC_KEY_PREFIX,
  SIGNING_KEY_PREFIX,
  WEBHOOK_ID_HEADER,
  WEBHOOK_SECRET_PREFIX,
  WEBHOOK_SIGNATURE_HEADER,
  WEBHOOK_TIMESTAMP_HEADER,
  WebhookVerificationError,
  type VerifyWebhookOptions,
  type WebhookHeaders,
  type WebhookPayload,
  type WebhookVerificationReason,
} from '@accepted/client/webhooks';

/** Size of the HMAC keys made by {@link generateWebhookSecret}. */
const SECRET_BYTES = 32;
/** The spec asks for 24 to 64 random bytes in a signing secret. */
const MIN_SECRET_BYTES = 24;
const ED25519_KEY_BYTES = 32;
/** DER header of a PKCS#8 ed25519 private key; the 32-byte seed follows it. */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

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

// --- Primitives --------------------------------------------------------------------------

function ed25519Sign(privateKey: KeyObject, content: Uint8Array): Buffer {
  return signBytes(null, content, privateKey);
}

// --- Keys --------------------------------------------------------------------------------

/** A signing secret decoded once: the HMAC key bytes (`v1`), or an ed25519 private key (`v1a`). */
type DecodedKey = { scheme: 'v1'; key: Buffer } | { scheme: 'v1a'; key: KeyObject };

/** The same advice as the client's key errors, as an AcceptedError. */
function invalidSecret(message: string): AcceptedError {
  return new AcceptedError('VALIDATION_FAILED', message, { fix: new WebhookKeyError().fix });
}

/** Runs `decode`, turning the client's {@link WebhookKeyError} into an AcceptedError. */
function asAccepted<T>(decode: () => T): T {
  try {
    return decode();
  } catch (error) {
    if (error instanceof WebhookKeyError) throw invalidSecret(error.message);
    throw error;
  }
}

function privateKeyFromSeed(seed: Buffer): KeyObject {
  return createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
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
  const bytes = asAccepted(() => decodeKeyBytes(encoded, 'signing key'));
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

function toSigningKey(secret: string): DecodedKey {
  if (secret.startsWith(WEBHOOK_SECRET_PREFIX)) {
    return {
      scheme: 'v1',
      key: asAccepted(() =>
        decodeHmacKey(secret.slice(WEBHOOK_SECRET_PREFIX.length), MIN_SECRET_BYTES),
      ),
    };
  }
  if (secret.startsWith(SIGNING_KEY_PREFIX)) {
    return { scheme: 'v1a', key: ed25519PrivateKey(secret.slice(SIGNING_KEY_PREFIX.length)) };
  }
  throw invalidSecret(
    `A webhook signing secret must start with ${WEBHOOK_SECRET_PREFIX} or ${SIGNING_KEY_PREFIX}.`,
  );
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

/**
 * Checks a received delivery and returns its payload; throws `WebhookVerificationError` when it
 * must not be trusted. `secretOrKey` is one or several `whsec_` secrets (or their bare base64)
 * and `whpk_` public keys: the delivery passes when any signature in the header matches any of
 * them. `rawBody` must be the bytes as received, before any JSON parsing. A secret that cannot
 * be used throws an `AcceptedError` `VALIDATION_FAILED`. The implementation is the client's
 * (`@accepted/client/webhooks`).
 */
export function verifyWebhook(
  secretOrKey: string | readonly string[],
  headers: WebhookHeaders,
  rawBody: string | Buffer | Uint8Array,
  options: VerifyWebhookOptions = {},
): WebhookPayload {
  return asAccepted(() => verifyDelivery(secretOrKey, headers, rawBody, options));
}
