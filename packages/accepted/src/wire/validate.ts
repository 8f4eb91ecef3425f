import type { ValidateFunction } from 'ajv';
import { AcceptedError } from '../domain/errors.ts';
import { createAjv, fieldProblems } from './ajv.ts';

const coercing = createAjv({ coerceTypes: 'array', useDefaults: true });

interface QuerySchema {
  properties: Record<string, { type?: unknown }>;
}

/**
 * A validator for a route's query string, from the same schema the OpenAPI document
 * publishes: strings become numbers where the schema says so, `a,b` and repeated parameters
 * become arrays, and a wrong value is INVALID_QUERY naming the parameter.
 */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the shape its schema guarantees
export function queryValidator<T>(schema: QuerySchema): (query: unknown) => T {
  const validate: ValidateFunction = coercing.compile(schema);
  const arrays = Object.entries(schema.properties)
    .filter(([, property]) => property.type === 'array')
    .map(([name]) => name);
  return (query) => {
    const copy: Record<string, unknown> = { ...(query as Record<string, unknown>) };
    for (const name of arrays) {
      // The query parser gives a string, or an array of them for a repeated parameter.
      const value = copy[name] as string | string[] | undefined;
      if (value === undefined) continue;
      copy[name] = [value]
        .flat()
        .flatMap((v) => v.split(','))
        .filter((v) => v !== '');
    }
    if (!validate(copy)) {
      const fields = fieldProblems('', validate.errors).map((problem) => ({
        field: problem.field.replace(/^\//, '').replace(/\/\d+$/, '') || 'query',
        message: problem.message,
      }));
      throw new AcceptedError(
        'INVALID_QUERY',
        `The query is not valid: ${fields.map((f) => `${f.field} ${f.message}`).join('; ')}.`,
        { fields, fix: 'Correct the query parameters listed in `fields` (see /v1/openapi.json).' },
      );
    }
    return copy as T;
  };
}

const bodies = createAjv({ useDefaults: true });

/**
 * A validator for a small JSON body (not a submit): a wrong one is VALIDATION_FAILED. No body
 * is read as `{}`; a body that is JSON `null` is a value like any other, refused by a schema
 * that asks for an object.
 */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the shape its schema guarantees
export function bodyValidator<T>(schema: object): (body: unknown) => T {
  const validate: ValidateFunction = bodies.compile(schema);
  return (body) => {
    const copy: unknown = body === undefined ? {} : structuredClone(body);
    if (!validate(copy)) {
      const fields = fieldProblems('', validate.errors);
      throw new AcceptedError(
        'VALIDATION_FAILED',
        `The body is not valid: ${fields.map((f) => `${f.field || '/'} ${f.message}`).join('; ')}.`,
        { fields, fix: 'Correct the fields listed in `fields` (see /v1/openapi.json).' },
      );
    }
    return copy as T;
  };
}
