import { Ajv, type ErrorObject, type Options } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { FieldProblem } from '../domain/errors.ts';
import {
  LABEL_FILTER_PATTERN,
  LABEL_VALUE_MESSAGE,
  LABEL_VALUE_PATTERN,
  MAX_LABEL_VALUE_LENGTH,
} from './submit.ts';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

/** One Ajv set-up for every schema of the wire: all errors, formats, unions. */
export function createAjv(options: Options = {}): Ajv {
  const ajv = new Ajv({ allErrors: true, strict: false, allowUnionTypes: true, ...options });
  addFormats(ajv);
  return ajv;
}

function fieldOf(prefix: string, error: ErrorObject): FieldProblem {
  let field = `${prefix}${error.instancePath}`;
  const params = error.params as Record<string, unknown>;
  if (error.keyword === 'required' && typeof params.missingProperty === 'string') {
    field += `/${params.missingProperty}`;
  } else if (
    error.keyword === 'additionalProperties' &&
    typeof params.additionalProperty === 'string'
  ) {
    return { field: `${field}/${params.additionalProperty}`, message: 'is not allowed here' };
  } else if (error.keyword === 'propertyNames' && typeof params.propertyName === 'string') {
    return { field: `${field}/${params.propertyName}`, message: 'is not a valid key' };
  } else if (error.keyword === 'pattern' && params.pattern === LABEL_VALUE_PATTERN) {
    return { field: field || '/', message: LABEL_VALUE_MESSAGE };
  } else if (error.keyword === 'pattern' && params.pattern === LABEL_FILTER_PATTERN) {
    return {
      field: field || '/',
      message: `must be key:value, the value at most ${MAX_LABEL_VALUE_LENGTH} characters that ${LABEL_VALUE_MESSAGE}`,
    };
  }
  return { field: field || '/', message: error.message ?? 'is not valid' };
}

export function fieldProblems(prefix: string, errors: readonly ErrorObject[] | null | undefined) {
  const seen = new Set<string>();
  const out: FieldProblem[] = [];
  for (const error of errors ?? []) {
    if (error.keyword === 'if') continue;
    const problem = fieldOf(prefix, error);
    const key = `${problem.field}\u0000${problem.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(problem);
  }
  return out;
}
