import { AcceptedError } from '../domain/errors.ts';
import type { Page } from './store.ts';

/**
 * Cursor pages, shared by the adapters: a cursor is the primary key of the last row of a page,
 * tagged with what it pages (`o` operations, `w` webhook rows) and base64url-encoded, so that
 * clients treat it as opaque and one kind's cursor is refused by another's list.
 */
export function encodeCursor(kind: string, pk: number): string {
  return Buffer.from(`${kind}:${pk}`).toString('base64url');
}

/** The primary key in a cursor of this kind; INVALID_QUERY for anything else. */
export function decodeCursor(kind: string, cursor: string): number {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const pk = text.startsWith(`${kind}:`) ? Number(text.slice(kind.length + 1)) : NaN;
  if (!Number.isSafeInteger(pk) || pk < 0) {
    throw new AcceptedError('INVALID_QUERY', 'The cursor is not one this server issued.', {
      fields: [{ field: 'cursor', message: 'unknown cursor' }],
      fix: 'Pass back the nextCursor of the previous page unchanged, or omit cursor to start over.',
    });
  }
  return pk;
}

/** `limit + 1` rows, newest first, into a page and the cursor of the next one. */
export function toPage<R extends { pk: number }, T>(
  kind: string,
  rows: readonly R[],
  limit: number,
  map: (row: R) => T,
): Page<T> {
  const more = rows.length > limit;
  const page = more ? rows.slice(0, limit) : rows;
  const last = page[page.length - 1];
  return { items: page.map(map), nextCursor: more && last ? encodeCursor(kind, last.pk) : null };
}
