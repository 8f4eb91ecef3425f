import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { AcceptedError } from '../domain/errors.ts';
import type { StreamGrant } from '../wire/request.ts';

/** Shortest secret accepted for signing stream tokens. */
export const MIN_STREAM_SECRET_LENGTH = 32;
/** Longest life of a stream token, in seconds. */
export const MAX_STREAM_TOKEN_TTL = 3600;
export const DEFAULT_STREAM_TOKEN_TTL = 300;

export type { StreamGrant };

interface TokenPayload {
  /** tenant */
  t: string;
  /** operation, when scoped */
  o?: string;
  /** expiry, epoch seconds */
  e: number;
}

const PREFIX = 'st_';

function invalid(message: string): AcceptedError {
  return new AcceptedError('UNAUTHENTICATED', message, {
    fix: 'Mint a new token with POST /v1/stream-tokens and pass it as access_token.',
  });
}

/**
 * Short-lived signed tokens for clients that cannot send an `Authorization` header (a
 * browser's EventSource and WebSocket): `st_<payload>.<HMAC-SHA256>`, both base64url. The
 * payload names the tenant, an optional operation and the expiry; nothing is stored.
 */
export class StreamTokens {
  private readonly key: Buffer;

  /** `secret`: shared by every node that must accept the same tokens; random by default. */
  constructor(secret?: string) {
    if (secret !== undefined && secret.length < MIN_STREAM_SECRET_LENGTH) {
      throw new AcceptedError(
        'VALIDATION_FAILED',
        `The stream secret must have at least ${MIN_STREAM_SECRET_LENGTH} characters.`,
        { fix: 'Use a long random string, for example the output of `openssl rand -hex 32`.' },
      );
    }
    this.key = secret === undefined ? randomBytes(32) : Buffer.from(secret, 'utf8');
  }

  private sign(payload: string): Buffer {
    return createHmac('sha256', this.key).update(payload).digest();
  }

  mint(grant: { tenant: string; operation?: string | null; ttlSeconds: number }): {
    token: string;
    expiresAt: number;
  } {
    // Rounded up to the second: a token lives at least its ttl (never a moment less).
    const expiresAt = Math.ceil((Date.now() + grant.ttlSeconds * 1000) / 1000);
    const payload: TokenPayload = { t: grant.tenant, e: expiresAt };
    if (grant.operation) payload.o = grant.operation;
    const encoded = Buffer.from(JSON.stringify(payload)).toString('base64url');
    return {
      token: `${PREFIX}${encoded}.${this.sign(encoded).toString('base64url')}`,
      expiresAt,
    };
  }

  /** The grant of a valid, unexpired token; UNAUTHENTICATED otherwise. */
  verify(token: string, now = Date.now()): StreamGrant {
    const dot = token.lastIndexOf('.');
    if (!token.startsWith(PREFIX) || dot === -1) throw invalid('The stream token is malformed.');
    const encoded = token.slice(PREFIX.length, dot);
    const given = Buffer.from(token.slice(dot + 1), 'base64url');
    const expected = this.sign(encoded);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw invalid('The stream token is not valid.');
    }
    let payload: TokenPayload;
    try {
      payload = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8')) as TokenPayload;
    } catch {
      throw invalid('The stream token is malformed.');
    }
    if (typeof payload.t !== 'string' || typeof payload.e !== 'number') {
      throw invalid('The stream token is malformed.');
    }
    if (payload.e * 1000 <= now) throw invalid('The stream token has expired.');
    return { tenant: payload.t, operation: payload.o ?? null, expiresAt: payload.e };
  }
}
