import { createHash } from 'node:crypto';
import { AcceptedError } from '../domain/errors.ts';

/** Keys are printable ASCII, 1 to 255 characters (a UUID is the usual choice). */
const KEY_PATTERN = /^[\x20-\x7e]{1,255}$/;

export function assertIdempotencyKey(key: string): void {
  if (KEY_PATTERN.test(key)) return;
  throw new AcceptedError('INVALID_HEADER', 'The Idempotency-Key is not valid.', {
    fields: [{ field: 'Idempotency-Key', message: 'must be 1 to 255 printable ASCII characters' }],
    fix: 'Send a fresh UUID for each distinct request, such as Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324".',
  });
}

/** JSON with object keys sorted at every depth: equal values give equal text. */
function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    // Only JSON values reach here (parsed bodies, or validated library submits).
    return JSON.stringify(value === undefined ? null : value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/**
 * The request's fingerprint: SHA-256 of its canonical JSON, so that the same request sent
 * with its members in another order (or other whitespace) is still the same request.
 */
export function requestFingerprint(body: unknown): string {
  return createHash('sha256').update(canonicalJson(body)).digest('base64url');
}
