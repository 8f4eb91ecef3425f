import {
  ERROR_CODES,
  type AcceptedError,
  type ErrorCode,
  type FieldProblem,
} from '../domain/errors.ts';

/** RFC 9457 problem details, with our stable `code` and the fields at fault. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  fix?: string;
  fields?: FieldProblem[];
  details?: Record<string, unknown>;
  instance?: string;
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export function problemType(code: ErrorCode): string {
  return `urn:accepted:problem:${code.toLowerCase().replaceAll('_', '-')}`;
}

/** A character a URI path may not hold as it is, or a `%` that starts no `%HH`. */
const NOT_IN_PATH = /%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]/gu;

/**
 * `path` as a URI reference (RFC 3986 `path-absolute`): what it may not hold as it is, a
 * stray `%` included (`/v1/%zz` is `/v1/%25zz`), percent-encoded as UTF-8. A path already
 * valid comes back unchanged.
 */
export function pathReference(path: string): string {
  return path.replace(NOT_IN_PATH, (char) =>
    [...Buffer.from(char, 'utf8')]
      .map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`)
      .join(''),
  );
}

/** The problem document of `error`; `instance` (a request path) is made a URI reference. */
export function toProblem(error: AcceptedError, instance?: string): Problem {
  const entry = ERROR_CODES[error.code];
  const problem: Problem = {
    type: problemType(error.code),
    title: entry.title,
    status: entry.status,
    detail: error.message,
    code: error.code,
  };
  if (error.fix !== undefined) problem.fix = error.fix;
  if (error.fields !== undefined) problem.fields = error.fields;
  if (error.details !== undefined) problem.details = error.details;
  if (instance !== undefined) problem.instance = pathReference(instance);
  return problem;
}
