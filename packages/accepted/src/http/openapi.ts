import { ERROR_CODES, type ErrorCode } from '../domain/errors.ts';
import type { OperationDefinition } from '../engine/definition.ts';
import { SUBMIT_REQUEST_SCHEMA } from '../engine/submit.ts';
import {
  EVENT_PAGE_SCHEMA,
  EVENT_SCHEMA,
  EVENTS_QUERY_SCHEMA,
  LIST_QUERY_SCHEMA,
  MONITOR_QUERY_SCHEMA,
  MONITOR_SCHEMA,
  OPERATION_ERROR_SCHEMA,
  OPERATION_PAGE_SCHEMA,
  PROBLEM_SCHEMA,
  PROGRESS_SCHEMA,
} from './schemas.ts';

export interface OpenApiOptions {
  definitions: ReadonlyMap<string, OperationDefinition<never, unknown>>;
  /** The server URL to advertise; default `/` (the host that served the document). */
  serverUrl?: string;
  /** Whether requests need an API key. */
  auth: boolean;
}

type Json = Record<string, unknown>;

const ref = (kind: string, name: string) => ({ $ref: `#/components/${kind}/${name}` });

/** Component names allow letters, digits, `.`, `-` and `_`. */
const componentName = (type: string) => type.replace(/[^A-Za-z0-9._-]/g, '_');

function queryParameters(schema: { properties: Record<string, Json> }): Json[] {
  return Object.entries(schema.properties).map(([name, property]) => {
    const { description, ...rest } = property;
    return {
      name,
      in: 'query',
      required: false,
      ...(description === undefined ? {} : { description }),
      schema: rest,
      ...(rest.type === 'array' ? { style: 'form', explode: true } : {}),
    };
  });
}

function problems(...codes: ErrorCode[]): Json {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes) {
    const status = ERROR_CODES[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const out: Json = {};
  for (const [status, list] of byStatus) {
    out[String(status)] = {
      description: `Problem details; \`code\` is ${list.join(' or ')}.`,
      headers:
        status === 503 || status === 409 ? { 'Retry-After': ref('headers', 'RetryAfter') } : {},
      content: { 'application/problem+json': { schema: ref('schemas', 'Problem') } },
    };
  }
  return out;
}

/** The problems any authenticated route may answer. */
const COMMON: ErrorCode[] = ['INTERNAL', 'SHUTTING_DOWN'];

function monitorResponse(description: string, extraHeaders: Json = {}): Json {
  return {
    description,
    headers: {
      ETag: ref('headers', 'ETag'),
      'Retry-After': ref('headers', 'RetryAfter'),
      ...extraHeaders,
    },
    content: { 'application/json': { schema: ref('schemas', 'StatusMonitor') } },
  };
}

const pollingHeaders = {
  Location: ref('headers', 'Location'),
  'Operation-Location': ref('headers', 'OperationLocation'),
};

/**
 * The OpenAPI 3.1 document of the HTTP API, built from the schemas that validate requests
 * (the submit envelope, each operation type's input schema, the query schemas) and the ones
 * that describe answers.
 */
export function openApiDocument(options: OpenApiOptions): Json {
  const schemas: Json = {
    StatusMonitor: MONITOR_SCHEMA,
    Progress: PROGRESS_SCHEMA,
    OperationError: OPERATION_ERROR_SCHEMA,
    Problem: PROBLEM_SCHEMA,
    Event: EVENT_SCHEMA,
    EventPage: EVENT_PAGE_SCHEMA,
    OperationPage: OPERATION_PAGE_SCHEMA,
  };
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  const { $id, ...envelope } = SUBMIT_REQUEST_SCHEMA;
  const variants: Json[] = [];
  for (const [type, definition] of [...options.definitions].sort(([a], [b]) =>
    a.localeCompare(b),
  )) {
    const name = componentName(type);
    const input = definition.inputSchema ?? {};
    schemas[`Input.${name}`] = input;
    if (definition.resultSchema) schemas[`Result.${name}`] = definition.resultSchema;
    variants.push({
      title: type,
      ...(definition.description ? { description: definition.description } : {}),
      properties: { type: { const: type }, input: ref('schemas', `Input.${name}`) },
    });
  }
  schemas.SubmitRequest = {
    ...envelope,
    properties: {
      ...envelope.properties,
      type: { ...envelope.properties.type, enum: [...options.definitions.keys()].sort() },
    },
    ...(variants.length > 0 ? { oneOf: variants } : {}),
  };

  const idParameter = ref('parameters', 'OperationId');
  const prefer = ref('parameters', 'Prefer');
  const ifMatch = ref('parameters', 'IfMatch');
  const authProblems: ErrorCode[] = options.auth ? ['UNAUTHENTICATED'] : [];
  /** What a conditional change of an operation (cancel, retry, delete) may answer. */
  const changeProblems = (state: ErrorCode) =>
    problems('OPERATION_NOT_FOUND', state, 'PRECONDITION_FAILED', ...authProblems, ...COMMON);

  const document: Json = {
    openapi: '3.1.0',
    info: {
      title: 'Accepted',
      version: '1',
      summary: 'Durable asynchronous operations: 202 Accepted, a status monitor, long polling.',
      description:
        'Submit work and get `202 Accepted` with a status monitor at once; learn the outcome by polling (`Retry-After`, `ETag`/`If-None-Match`), long polling (`Prefer: wait=N`), or a synchronous answer (`Prefer: wait=N` on submit). Errors are RFC 9457 problem details with a stable `code`. Compatible with Azure-style long-running-operation pollers.',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    servers: [{ url: options.serverUrl ?? '/' }],
    ...(options.auth ? { security: [{ apiKey: [] }] } : {}),
    tags: [{ name: 'operations', description: 'Submit and observe operations.' }],
    paths: {
      '/v1/operations': {
        post: {
          operationId: 'submitOperation',
          tags: ['operations'],
          summary: 'Submit an operation',
          description:
            'Answers `202` with the status monitor at once. With `Prefer: wait=N`, holds the request up to N seconds (capped by the server) and answers `200` with the final monitor if the operation ends in time. `Prefer: respond-async` always answers `202`; `return=minimal` drops the body. An `Idempotency-Key` makes retries safe: the same key with the same body returns the first operation and the first answer’s status (`Idempotent-Replayed: true`).',
          parameters: [
            prefer,
            ref('parameters', 'IdempotencyKey'),
            ref('parameters', 'Traceparent'),
          ],
          requestBody: {
            required: true,
            content: { 'application/json': { schema: ref('schemas', 'SubmitRequest') } },
          },
          responses: {
            '200': monitorResponse('The operation ended within the `Prefer: wait`.', {
              'Content-Location': ref('headers', 'Location'),
              'Preference-Applied': ref('headers', 'PreferenceApplied'),
              'Idempotent-Replayed': ref('headers', 'IdempotentReplayed'),
            }),
            '202': monitorResponse('Accepted: poll the monitor at `Operation-Location`.', {
              ...pollingHeaders,
              'Preference-Applied': ref('headers', 'PreferenceApplied'),
              'Idempotent-Replayed': ref('headers', 'IdempotentReplayed'),
            }),
            ...problems(
              'MALFORMED_JSON',
              'INVALID_HEADER',
              'PAYLOAD_TOO_LARGE',
              'UNSUPPORTED_MEDIA_TYPE',
              'VALIDATION_FAILED',
              'UNKNOWN_OPERATION_TYPE',
              'IDEMPOTENCY_KEY_REUSED',
              'IDEMPOTENCY_KEY_IN_FLIGHT',
              ...authProblems,
              ...COMMON,
            ),
          },
        },
        get: {
          operationId: 'listOperations',
          tags: ['operations'],
          summary: 'List operations, newest first',
          description:
            'Pages by opaque cursor, stable while new operations arrive. The next page is also in a `Link: <...>; rel="next"` header.',
          parameters: queryParameters(LIST_QUERY_SCHEMA),
          responses: {
            '200': {
              description: 'One page.',
              headers: { Link: { description: 'The next page.', schema: { type: 'string' } } },
              content: { 'application/json': { schema: ref('schemas', 'OperationPage') } },
            },
            ...problems('INVALID_QUERY', ...authProblems, ...COMMON),
          },
        },
      },
      '/v1/operations/{id}': {
        parameters: [idParameter],
        get: {
          operationId: 'getOperation',
          tags: ['operations'],
          summary: 'The status monitor (poll or long poll)',
          description:
            '`If-None-Match` with the ETag answers `304` while nothing changed. A long poll (`Prefer: wait=N` or `?wait=N`) holds the answer until the version moves past the one in `If-None-Match` (or the current one), or the operation ends, or N seconds pass (capped by the server, with a little jitter).',
          parameters: [
            prefer,
            ref('parameters', 'IfNoneMatch'),
            ...queryParameters(MONITOR_QUERY_SCHEMA),
          ],
          responses: {
            '200': monitorResponse('The monitor.', {
              'Preference-Applied': ref('headers', 'PreferenceApplied'),
            }),
            '304': {
              description: 'Unchanged since the ETag in If-None-Match.',
              headers: {
                ETag: ref('headers', 'ETag'),
                'Retry-After': ref('headers', 'RetryAfter'),
              },
            },
            ...problems('OPERATION_NOT_FOUND', 'INVALID_QUERY', ...authProblems, 'INTERNAL'),
          },
        },
        delete: {
          operationId: 'deleteOperation',
          tags: ['operations'],
          summary: 'Delete a finished operation',
          description:
            'Only succeeded, failed or canceled operations; its idempotency keys go too.',
          parameters: [ifMatch],
          responses: {
            '204': { description: 'Deleted.' },
            ...changeProblems('ILLEGAL_TRANSITION'),
          },
        },
      },
      '/v1/operations/{id}:cancel': {
        parameters: [idParameter],
        post: {
          operationId: 'cancelOperation',
          tags: ['operations'],
          summary: 'Cancel an operation',
          description:
            'A queued operation is canceled at once (`200`). A running one gets cancellation requested: its handler’s signal is aborted and it ends `canceled` (`202`, poll the monitor). A finished one is `409 ALREADY_TERMINAL`.',
          parameters: [ifMatch],
          responses: {
            '200': monitorResponse('Canceled.'),
            '202': monitorResponse('Cancellation requested.', pollingHeaders),
            ...changeProblems('ALREADY_TERMINAL'),
          },
        },
      },
      '/v1/operations/{id}:retry': {
        parameters: [idParameter],
        post: {
          operationId: 'retryOperation',
          tags: ['operations'],
          summary: 'Run a failed or canceled operation again',
          parameters: [ifMatch],
          responses: {
            '202': monitorResponse('Queued again, with a fresh attempt budget.', pollingHeaders),
            ...changeProblems('ILLEGAL_TRANSITION'),
          },
        },
      },
      '/v1/operations/{id}/events': {
        parameters: [idParameter],
        get: {
          operationId: 'listOperationEvents',
          tags: ['operations'],
          summary: 'The operation’s events after a cursor',
          parameters: queryParameters(EVENTS_QUERY_SCHEMA),
          responses: {
            '200': {
              description: 'Events in seq order.',
              content: { 'application/json': { schema: ref('schemas', 'EventPage') } },
            },
            ...problems('OPERATION_NOT_FOUND', 'INVALID_QUERY', ...authProblems, 'INTERNAL'),
          },
        },
      },
      '/healthz': {
        get: {
          operationId: 'health',
          summary: 'The process is up',
          security: [],
          responses: { '200': { description: 'Up.' } },
        },
      },
      '/readyz': {
        get: {
          operationId: 'ready',
          summary: 'The store answers',
          security: [],
          responses: {
            '200': { description: 'Ready.' },
            ...problems('STORE_UNAVAILABLE', 'SHUTTING_DOWN'),
          },
        },
      },
      '/v1/openapi.json': {
        get: {
          operationId: 'openApi',
          summary: 'This document',
          security: [],
          responses: { '200': { description: 'OpenAPI 3.1.' } },
        },
      },
    },
    components: {
      schemas,
      securitySchemes: {
        apiKey: {
          type: 'http',
          scheme: 'bearer',
          description: 'An API key; it decides the tenant every read and write is scoped to.',
        },
      },
      parameters: {
        OperationId: {
          name: 'id',
          in: 'path',
          required: true,
          schema: { type: 'string', pattern: '^op_[0-9A-Za-z]{30}$' },
        },
        Prefer: {
          name: 'Prefer',
          in: 'header',
          description: 'RFC 7240: `wait=N`, `respond-async`, `return=minimal|representation`.',
          schema: { type: 'string' },
          example: 'wait=10',
        },
        IfMatch: {
          name: 'If-Match',
          in: 'header',
          description: 'Change only if the operation’s ETag is one of these (else 412).',
          schema: { type: 'string' },
        },
        IfNoneMatch: {
          name: 'If-None-Match',
          in: 'header',
          description: 'The ETag the client has: 304 while unchanged; the base of a long poll.',
          schema: { type: 'string' },
        },
        IdempotencyKey: {
          name: 'Idempotency-Key',
          in: 'header',
          description:
            'A unique key per request (a UUID), quoted (`"..."`) or bare. Kept 24 hours by default, per tenant.',
          schema: { type: 'string', maxLength: 257 },
        },
        Traceparent: {
          name: 'traceparent',
          in: 'header',
          description: 'W3C trace context, kept with the operation.',
          schema: { type: 'string' },
        },
      },
      headers: {
        ETag: { description: 'The version, quoted.', schema: { type: 'string' } },
        RetryAfter: {
          description: 'Seconds to wait before polling again (while in progress).',
          schema: { type: 'integer' },
        },
        Location: {
          description: 'The status monitor (absolute URL).',
          schema: { type: 'string', format: 'uri' },
        },
        OperationLocation: {
          description: 'The status monitor (absolute URL), as Azure-style pollers read it.',
          schema: { type: 'string', format: 'uri' },
        },
        PreferenceApplied: {
          description: 'The preferences honoured (RFC 7240).',
          schema: { type: 'string' },
        },
        IdempotentReplayed: {
          description: '`true` when this answer replays an earlier request with the same key.',
          schema: { type: 'string', enum: ['true'] },
        },
      },
    },
  };
  return document;
}
