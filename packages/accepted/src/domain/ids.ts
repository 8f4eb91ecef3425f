const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/**
 * An unguessable identifier: `prefix_` followed by 22 base62 characters, each drawn uniformly
 * from the platform's CSPRNG by rejection sampling: 22 x log2(62) = 131 random bits.
 */
export function randomId(prefix: string): string {
  let out = `${prefix}_`;
  for (let need = 22; need > 0;) {
    const b = randomByte();
    if (b >= 248) continue; // 248 = 4 x 62: keeps every character equally likely
    out += ALPHABET[b % 62] ?? '0';
    need--;
  }
  return out;
}

// Random bytes are drawn from the CSPRNG 4 KiB at a time: one call per ~150 ids, not per id.
const pool = new Uint8Array(4096);
let poolAt = pool.length;

function randomByte(): number {
  if (poolAt === pool.length) {
    globalThis.crypto.getRandomValues(pool);
    poolAt = 0;
  }
  const b = pool[poolAt] ?? 0;
  pool[poolAt++] = 0; // a byte is used once and not left in memory
  return b;
}

const OPERATION_ID = /^op_[0-9A-Za-z]{30}$/;

/** Milliseconds since the epoch as 8 base62 digits: sorts as time does, until year 8800. */
function timePrefix(ms: number): string {
  let out = '';
  let n = Math.floor(ms);
  for (let i = 0; i < 8; i++) {
    out = (ALPHABET[n % 62] ?? '0') + out;
    n = Math.floor(n / 62);
  }
  return out;
}

/**
 * An operation id: `op_`, 8 characters of creation time (so ids sort by creation and index
 * inserts land at the end of the B-tree instead of on random pages), then 22 random base62
 * characters (131 bits): unguessable, like a UUIDv7 with more randomness.
 */
export function newOperationId(now = Date.now()): string {
  return `op_${timePrefix(now)}${randomId('').slice(1)}`;
}

export function isOperationId(value: string): boolean {
  return OPERATION_ID.test(value);
}

/** A lease token: random, never reused, never shown outside the worker that holds it. */
export function newLeaseToken(): string {
  return randomId('lease');
}
