import { parseItem } from 'structured-headers';
import { AcceptedError } from '../domain/errors.ts';

/**
 * Request headers with rules of their own: `Prefer` (RFC 7240), entity tags (RFC 9110),
 * `Idempotency-Key` (IETF httpapi draft), `traceparent` (W3C Trace Context), and the headers
 * that may be sent only once.
 */

/**
 * Headers we read that hold one value. Node keeps the first of two `Authorization`, `Host` or
 * `Content-Type` fields and joins two of any other into `a, b`: either way one of the values
 * the client sent is lost, so a request that repeats one of them is refused instead.
 * (`Prefer`, `If-Match`, `If-None-Match` are lists; `Last-Event-ID`'s joined value is not a
 * number, so it is refused by its own format.)
 */
export const SINGLE_VALUED_HEADERS = [
  'Host',
  'Authorization',
  'Content-Type',
  'Content-Length',
  'Idempotency-Key',
] as const;

/** The lengths of those names, to pass over the other headers without lower-casing them. */
const SINGLE_VALUED_LENGTHS = new Set(SINGLE_VALUED_HEADERS.map((name) => name.length));
const SINGLE_VALUED_INDEX = new Map(
  SINGLE_VALUED_HEADERS.map((name, index) => [name.toLowerCase(), index]),
);

/**
 * Throws INVALID_HEADER when a single-valued header came more than once. `rawHeaders` is the
 * request's list of names and values as received (`[name, value, name, value, ...]`), where
 * repeated fields stay apart. Runs on every request: no allocation for the usual headers.
 */
export function assertSingleValued(rawHeaders: readonly string[]): void {
  let seen = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? '';
    if (!SINGLE_VALUED_LENGTHS.has(name.length)) continue;
    const index = SINGLE_VALUED_INDEX.get(name.toLowerCase());
    if (index === undefined) continue;
    const bit = 1 << index;
    if ((seen & bit) !== 0) {
      const header = SINGLE_VALUED_HEADERS[index] ?? name;
      throw new AcceptedError('INVALID_HEADER', `The ${header} header was sent more than once.`, {
        fields: [{ field: header, message: 'sent more than once' }],
        fix: `Send ${header} once.`,
      });
    }
    seen |= bit;
  }
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})/;

/**
 * A W3C `traceparent` (Trace Context §3.2), or undefined when it is absent or not valid: an
 * invalid one is ignored, as the specification says, never an error. Version `00` has
 * exactly 55 characters; a later version at least 55, the 56th a `-`, and only its first 55
 * (the fields version 00 defines) are kept. `ff` is not a version; an all-zero trace id or
 * parent id is invalid.
 */
export function parseTraceparent(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string') return undefined;
  const match = TRACEPARENT.exec(header);
  if (!match) return undefined;
  const [, version, traceId, parentId] = match;
  if (version === 'ff') return undefined;
  if (version === '00' ? header.length !== 55 : header.length > 55 && header[55] !== '-') {
    return undefined;
  }
  if (/^0+$/.test(traceId ?? '') || /^0+$/.test(parentId ?? '')) return undefined;
  return header.slice(0, 55);
}

/** One preference: its value ('' when it has none). */
export type Preferences = ReadonlyMap<string, string>;

/** Splits on `sep` outside double-quoted strings. */
function splitOutsideQuotes(text: string, sep: string): string[] {
  const parts: string[] = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] ?? '';
    if (ch === '\\' && quoted) {
      current += ch + (text[i + 1] ?? '');
      i++;
      continue;
    }
    if (ch === '"') quoted = !quoted;
    if (ch === sep && !quoted) {
      parts.push(current);
      current = '';
      continue;
    }
    current += ch;
  }
  parts.push(current);
  return parts;
}

function unquote(word: string): string {
  if (word.length >= 2 && word.startsWith('"') && word.endsWith('"')) {
    return word.slice(1, -1).replace(/\\(.)/g, '$1');
  }
  return word;
}

/**
 * `Prefer` as RFC 7240 §2 reads it: comma-separated preferences, names compared
 * case-insensitively, the first of duplicates kept, parameters after `;` ignored (none of
 * ours has any). Several `Prefer` fields are one list.
 */
export function parsePrefer(header: string | string[] | undefined): Preferences {
  const preferences = new Map<string, string>();
  if (header === undefined) return preferences;
  const text = Array.isArray(header) ? header.join(',') : header;
  for (const item of splitOutsideQuotes(text, ',')) {
    const [head = ''] = splitOutsideQuotes(item, ';');
    const eq = head.indexOf('=');
    const name = (eq === -1 ? head : head.slice(0, eq)).trim().toLowerCase();
    if (name === '' || preferences.has(name)) continue;
    preferences.set(name, eq === -1 ? '' : unquote(head.slice(eq + 1).trim()));
  }
  return preferences;
}

/** `wait=<delta-seconds>`, or null when absent or not a whole number (then it is ignored). */
export function preferredWait(preferences: Preferences): number | null {
  const value = preferences.get('wait');
  if (value === undefined || !/^\d{1,9}$/.test(value)) return null;
  return Number(value);
}

/** `return=minimal|representation`; both, or anything else, count as neither. */
export function preferredReturn(preferences: Preferences): 'minimal' | 'representation' | null {
  const value = preferences.get('return');
  return value === 'minimal' || value === 'representation' ? value : null;
}

/** The entity tags of an `If-Match` / `If-None-Match` list, or '*' for any. */
export function parseEntityTags(header: string | undefined): string[] | '*' | null {
  if (header === undefined) return null;
  const trimmed = header.trim();
  if (trimmed === '*') return '*';
  return splitOutsideQuotes(trimmed, ',')
    .map((tag) => tag.trim())
    .filter((tag) => tag !== '');
}

/**
 * The versions an `If-Match` allows. Our tags are strong, `"<version>"`; a weak tag never
 * matches (strong comparison, RFC 9110 §13.1.1), nor does one that is not ours. `*` (any
 * current representation) and no header both give undefined: no version condition.
 */
export function ifMatchVersions(header: string | undefined): number[] | undefined {
  const tags = parseEntityTags(header);
  if (tags === null || tags === '*') return undefined;
  const versions: number[] = [];
  for (const tag of tags) {
    // Compared as text (RFC 9110 §8.8.3.2): "01" is not our "1".
    const match = /^"([1-9]\d{0,14})"$/.exec(tag);
    if (match?.[1] !== undefined) versions.push(Number(match[1]));
  }
  return versions;
}

/** Does an `If-None-Match` list match `etag` (weak comparison, RFC 9110 §13.1.2)? */
export function noneMatch(header: string | undefined, etag: string): boolean {
  const tags = parseEntityTags(header);
  if (tags === null) return false;
  if (tags === '*') return true;
  const opaque = etag.replace(/^W\//, '');
  return tags.some((tag) => tag.replace(/^W\//, '') === opaque);
}

/** The version named by an `If-None-Match` of ours (weak or strong), else null. */
export function knownVersion(header: string | undefined): number | null {
  const tags = parseEntityTags(header);
  if (tags === null || tags === '*') return null;
  let best: number | null = null;
  for (const tag of tags) {
    const match = /^(?:W\/)?"([1-9]\d{0,14})"$/.exec(tag);
    if (match?.[1] !== undefined) best = Math.max(best ?? 0, Number(match[1]));
  }
  return best;
}

/**
 * `Idempotency-Key`: the draft's sf-string (`"8e03…"`) or, as most clients send it today, the
 * bare value. Both spellings of one key are the same key.
 */
export function parseIdempotencyKey(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (Array.isArray(header) && header.length === 1) header = header[0] ?? '';
  const invalid = (why: string) =>
    new AcceptedError('INVALID_HEADER', `The Idempotency-Key is not valid: ${why}.`, {
      fields: [{ field: 'Idempotency-Key', message: why }],
      fix: 'Send one key per request, such as Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324".',
    });
  // Node joins two fields into `a, b`: pass `headersDistinct`, which keeps them apart (the
  // HTTP server refuses a repeated key before this, with assertSingleValued).
  if (Array.isArray(header)) throw invalid('sent more than once');
  const value = header.trim();
  if (!value.startsWith('"')) return value;
  let item: unknown;
  try {
    item = parseItem(value)[0];
  } catch {
    throw invalid('a quoted key must be a Structured Field string');
  }
  if (typeof item !== 'string') throw invalid('a quoted key must be a Structured Field string');
  return item;
}
