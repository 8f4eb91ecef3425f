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
  if (instance !== undefined) problem.instance = instance;
  return problem;
}
