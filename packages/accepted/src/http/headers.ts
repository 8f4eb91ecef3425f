import { parseItem } from 'structured-headers';
import { AcceptedError } from '../domain/errors.ts';

/**
 * Request headers with rules of their own: `Prefer` (RFC 7240), entity tags (RFC 9110) and
 * `Idempotency-Key` (IETF httpapi draft).
 */

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
    const match = /^"(\d{1,15})"$/.exec(tag);
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
    const match = /^(?:W\/)?"(\d{1,15})"$/.exec(tag);
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
  const invalid = (why: string) =>
    new AcceptedError('INVALID_HEADER', `The Idempotency-Key is not valid: ${why}.`, {
      fields: [{ field: 'Idempotency-Key', message: why }],
      fix: 'Send one key per request, such as Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324".',
    });
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
