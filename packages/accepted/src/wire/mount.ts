import { AcceptedError } from '../domain/errors.ts';
import type { Operation } from '../domain/operation.ts';
import { toMonitor, type StatusMonitor } from './monitor.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * The path the API is mounted under, as clients see it (`''` at the root, `/async` under
     * a prefix or an Express mount): put in front of every link and Location it answers.
     */
    acceptedPrefix: string;
  }
}

/**
 * A mount prefix as given (`/async`, `/async/`, `/`, or nothing) in its one form: `''` for
 * the root, else a path that starts with `/` and does not end with one. VALIDATION_FAILED for
 * anything else (a prefix is a path, not a URL).
 */
export function normalizePrefix(prefix: string | undefined, field = 'prefix'): string {
  if (prefix === undefined) return '';
  const trimmed = prefix.replace(/\/+$/, '');
  if (trimmed === '') return '';
  if (!/^(\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$/.test(trimmed)) {
    throw new AcceptedError('VALIDATION_FAILED', `${field} must be a path such as /async.`, {
      fields: [{ field, message: 'must be a path that starts with /' }],
      fix: 'Give the path only (no scheme, host, query or fragment), such as /async.',
    });
  }
  return trimmed;
}

/** The path of a request target (what comes before `?`). */
export function pathOf(url: string): string {
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

/**
 * The request target inside `prefix` (`/async/v1/ws?x=1` under `/async` is `/v1/ws?x=1`), or
 * null when the target is not under it.
 */
export function insidePrefix(url: string, prefix: string): string | null {
  if (prefix === '') return url;
  if (!url.startsWith(prefix)) return null;
  const rest = url.slice(prefix.length);
  if (rest === '' || rest.startsWith('?')) return `/${rest}`;
  return rest.startsWith('/') ? rest : null;
}

/** The status monitor with its links under the mount prefix. */
export function monitorAt(operation: Operation, prefix: string): StatusMonitor {
  const monitor = toMonitor(operation);
  if (prefix === '') return monitor;
  const { self, events, cancel } = monitor.links;
  monitor.links = { self: prefix + self, events: prefix + events, cancel: prefix + cancel };
  return monitor;
}
