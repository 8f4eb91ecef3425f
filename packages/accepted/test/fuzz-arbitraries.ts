// The generators of test/fuzz.test.ts: the routes of an OpenAPI document, valid and
// near-valid values of their JSON Schemas, and everything a hostile client sends around them
// (headers, query strings, body bytes). Nothing here talks to a server: the test file does.
import fc from 'fast-check';

export type Json = Record<string, unknown>;

/** A route, or a schema, for which no generator can be built: the fuzz would not cover it. */
export class NoStrategy extends Error {
  override readonly name = 'NoStrategy';
}

const isRecord = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

// ---- values the JSON text is written from --------------------------------------------------

/** A string of `length` copies of `unit`, built when the body is written (not by fast-check). */
export class Big {
  constructor(
    readonly length: number,
    readonly unit: string,
  ) {}
}
/** An array of `length` copies of `item`. */
export class BigArray {
  constructor(
    readonly length: number,
    readonly item: unknown,
  ) {}
}
/** An object of `count` members `k0`, `k1`, ... all `value`. */
export class BigObject {
  constructor(
    readonly count: number,
    readonly value: unknown,
  ) {}
}
/** `depth` nested arrays (or objects `{"d": ...}`) around `leaf`. */
export class Deep {
  constructor(
    readonly depth: number,
    readonly kind: 'array' | 'object',
    readonly leaf: unknown,
  ) {}
}
/** A JSON fragment written as it is: `1e400`, `-0`, `NaN`, `"\ud800"`. */
export class Raw {
  constructor(readonly text: string) {}
}
/** An object written member by member, in order: duplicate keys, `__proto__`. */
export class Entries {
  constructor(readonly entries: readonly (readonly [string, unknown])[]) {}
}

/** The JSON text of a value with the markers above. */
export function writeJson(value: unknown): string {
  const out: string[] = [];
  const write = (v: unknown): void => {
    if (v instanceof Raw) out.push(v.text);
    else if (v instanceof Big) out.push(JSON.stringify(v.unit.repeat(v.length)));
    else if (v instanceof Deep) {
      const leaf = writeJson(v.leaf);
      if (v.kind === 'array') out.push('['.repeat(v.depth), leaf, ']'.repeat(v.depth));
      else out.push('{"d":'.repeat(v.depth), leaf, '}'.repeat(v.depth));
    } else if (v instanceof BigArray) {
      const item = writeJson(v.item);
      out.push('[', Array.from({ length: v.length }, () => item).join(','), ']');
    } else if (v instanceof BigObject) {
      const item = writeJson(v.value);
      out.push('{', Array.from({ length: v.count }, (_, i) => `"k${i}":${item}`).join(','), '}');
    } else if (v instanceof Entries) {
      out.push('{');
      v.entries.forEach(([key, member], i) => {
        if (i > 0) out.push(',');
        out.push(JSON.stringify(key), ':');
        write(member);
      });
      out.push('}');
    } else if (Array.isArray(v)) {
      out.push('[');
      v.forEach((item, i) => {
        if (i > 0) out.push(',');
        write(item);
      });
      out.push(']');
    } else if (isRecord(v)) {
      write(new Entries(Object.entries(v)));
    } else if (v === undefined) {
      out.push('null');
    } else {
      out.push(JSON.stringify(v));
    }
  };
  write(value);
  return out.join('');
}

/** A short, printable account of a value (big markers by their size), for failure reports. */
export function describeValue(value: unknown, room = 400): string {
  if (value === undefined) return '(none)';
  const text = JSON.stringify(value, (_key, v: unknown) => {
    if (v instanceof Big) return `<${v.length} × ${JSON.stringify(v.unit)}>`;
    if (v instanceof BigArray) return `<array of ${v.length}>`;
    if (v instanceof BigObject) return `<object of ${v.count} members>`;
    if (v instanceof Deep) return `<${v.depth} nested ${v.kind}s>`;
    if (v instanceof Raw) return `<raw ${v.text.slice(0, 60)}>`;
    if (v instanceof Entries) return { '<entries>': v.entries };
    return v;
  });
  return text.length > room ? `${text.slice(0, room)}… (${text.length} chars)` : text;
}

// ---- the routes of the document --------------------------------------------------------------

export interface ParamSpec {
  name: string;
  in: 'path' | 'query' | 'header';
  required: boolean;
  schema: Json;
}

export interface ResponseSpec {
  /** The JSON schema of the `application/json` (or problem) answer, when there is one. */
  schema: Json | null;
  contentTypes: string[];
  /** The problem codes the description names (`code` is A or B). */
  codes: string[];
}

export interface RouteSpec {
  key: string;
  method: string;
  path: string;
  params: ParamSpec[];
  body: { required: boolean; schema: Json; maxBytes: number; maxDepth: number } | null;
  /** `security: []`: served without credentials. */
  isPublic: boolean;
  /** Takes a stream token (`?access_token=`) instead of an API key. */
  takesStreamToken: boolean;
  responses: Map<string, ResponseSpec>;
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

/** Follows `#/components/...` references inside the document. */
export function resolveRef(doc: Json, value: unknown): unknown {
  let current = value;
  for (let hops = 0; isRecord(current) && typeof current.$ref === 'string'; hops++) {
    if (hops > 20) throw new NoStrategy(`a $ref cycle at ${current.$ref}`);
    const ref: string = current.$ref;
    if (!ref.startsWith('#/')) throw new NoStrategy(`an external $ref ${ref}`);
    let target: unknown = doc;
    for (const part of ref.slice(2).split('/')) {
      target = isRecord(target) ? target[part.replaceAll('~1', '/').replaceAll('~0', '~')] : null;
    }
    if (target === undefined || target === null) throw new NoStrategy(`a dangling $ref ${ref}`);
    current = target;
  }
  return current;
}

/** The component name of a `$ref` schema (`StatusMonitor`), or null. */
export function refName(schema: unknown): string | null {
  if (!isRecord(schema) || typeof schema.$ref !== 'string') return null;
  return schema.$ref.split('/').at(-1) ?? null;
}

/**
 * Every path and method of the document, with its parameters (path-level ones included),
 * its JSON request body and its answers. Throws NoStrategy for what the fuzz cannot send:
 * a cookie parameter, a body that is not JSON.
 */
export function routesOf(doc: Json): RouteSpec[] {
  const paths = doc.paths;
  if (!isRecord(paths)) throw new NoStrategy('the document has no paths');
  const globalSecurity = doc.security;
  const routes: RouteSpec[] = [];
  for (const [path, rawItem] of Object.entries(paths)) {
    const item = resolveRef(doc, rawItem);
    if (!isRecord(item)) continue;
    const shared: unknown[] = Array.isArray(item.parameters) ? item.parameters : [];
    for (const method of METHODS) {
      const operation = item[method];
      if (!isRecord(operation)) continue;
      const key = `${method.toUpperCase()} ${path}`;
      const own: unknown[] = Array.isArray(operation.parameters) ? operation.parameters : [];
      const byName = new Map<string, ParamSpec>();
      for (const raw of [...shared, ...own]) {
        const param = resolveRef(doc, raw);
        if (!isRecord(param) || typeof param.name !== 'string') {
          throw new NoStrategy(`${key}: a parameter without a name`);
        }
        const where = param.in;
        if (where !== 'path' && where !== 'query' && where !== 'header') {
          throw new NoStrategy(`${key}: parameter ${param.name} in ${String(where)}`);
        }
        const schema = resolveRef(doc, param.schema ?? {});
        if (!isRecord(schema)) throw new NoStrategy(`${key}: parameter ${param.name} schema`);
        byName.set(`${where}:${param.name.toLowerCase()}`, {
          name: param.name,
          in: where,
          required: param.required === true,
          schema,
        });
      }
      for (const name of path.match(/\{[^}]+\}/g) ?? []) {
        if (!byName.has(`path:${name.slice(1, -1).toLowerCase()}`)) {
          throw new NoStrategy(`${key}: path parameter ${name} is not described`);
        }
      }
      let body: RouteSpec['body'] = null;
      const requestBody = resolveRef(doc, operation.requestBody);
      if (isRecord(requestBody)) {
        const content = isRecord(requestBody.content) ? requestBody.content : {};
        const types = Object.keys(content);
        if (types.length !== 1 || types[0] !== 'application/json') {
          throw new NoStrategy(`${key}: a request body of ${types.join(', ') || 'no type'}`);
        }
        const media = content['application/json'];
        const schema = isRecord(media) ? media.schema : undefined;
        if (!isRecord(schema)) throw new NoStrategy(`${key}: a request body without a schema`);
        const maxBytes = requestBody['x-max-bytes'];
        const maxDepth = requestBody['x-max-depth'];
        if (typeof maxBytes !== 'number' || typeof maxDepth !== 'number') {
          throw new NoStrategy(`${key}: a request body without x-max-bytes and x-max-depth`);
        }
        body = { required: requestBody.required === true, schema, maxBytes, maxDepth };
      }
      const security = Array.isArray(operation.security) ? operation.security : globalSecurity;
      const schemes = Array.isArray(security)
        ? security.flatMap((entry) => (isRecord(entry) ? Object.keys(entry) : []))
        : [];
      const responses = new Map<string, ResponseSpec>();
      const rawResponses = isRecord(operation.responses) ? operation.responses : {};
      for (const [status, rawResponse] of Object.entries(rawResponses)) {
        const response = resolveRef(doc, rawResponse);
        if (!isRecord(response)) continue;
        const content = isRecord(response.content) ? response.content : {};
        const jsonType = Object.keys(content).find((type) => /json/.test(type));
        const media = jsonType === undefined ? undefined : content[jsonType];
        const description = typeof response.description === 'string' ? response.description : '';
        const named = /`code` is ([^.]*)\./.exec(description)?.[1] ?? '';
        responses.set(status, {
          schema: isRecord(media) && isRecord(media.schema) ? media.schema : null,
          contentTypes: Object.keys(content),
          codes: named.split(/\s+or\s+|\s+/).filter((code) => /^[A-Z_]+$/.test(code)),
        });
      }
      routes.push({
        key,
        method: method.toUpperCase(),
        path,
        params: [...byName.values()],
        body,
        isPublic: schemes.length === 0,
        takesStreamToken: schemes.includes('streamToken'),
        responses,
      });
    }
  }
  return routes;
}

// ---- JSON Schema: valid values -------------------------------------------------------------

/** The keywords the generators understand; any other makes the schema unfuzzable. */
const KEYWORDS = new Set([
  '$ref',
  'type',
  'enum',
  'const',
  'pattern',
  'format',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'minItems',
  'maxItems',
  'uniqueItems',
  'items',
  'properties',
  'required',
  'additionalProperties',
  'propertyNames',
  'minProperties',
  'maxProperties',
  'oneOf',
  'allOf',
  'default',
  'description',
  'title',
  'example',
  'examples',
  'x-max-bytes',
  'x-max-depth',
]);
const FORMATS = new Set(['date-time', 'uri']);

/** What the generators need besides a schema: where `$ref`s point, and URLs to use. */
export interface SchemaEnv {
  doc: Json;
  /** URLs the server may call (a real receiver): valid values of `format: uri`. */
  goodUrls: readonly string[];
}

/** A schema with its `$ref` followed and its `allOf` merged in. */
function normalize(env: SchemaEnv, raw: unknown, where: string): Json {
  const schema = resolveRef(env.doc, raw);
  if (!isRecord(schema)) throw new NoStrategy(`${where}: a schema that is not an object`);
  for (const keyword of Object.keys(schema)) {
    if (!KEYWORDS.has(keyword)) throw new NoStrategy(`${where}: the keyword ${keyword}`);
  }
  if (typeof schema.format === 'string' && !FORMATS.has(schema.format)) {
    throw new NoStrategy(`${where}: the format ${schema.format}`);
  }
  if (!Array.isArray(schema.allOf)) return schema;
  const { allOf, ...rest } = schema;
  return (allOf as unknown[]).reduce<Json>(
    (merged, part, i) => merge(merged, normalize(env, part, `${where}/allOf/${i}`)),
    rest,
  );
}

/** Both schemas at once (what `allOf`, or a `oneOf` branch over its base, means). */
function merge(base: Json, more: Json): Json {
  const out: Json = { ...base, ...more };
  if (isRecord(base.properties) && isRecord(more.properties)) {
    const properties: Json = { ...base.properties };
    for (const [name, schema] of Object.entries(more.properties)) {
      const before = properties[name];
      properties[name] = isRecord(before) && isRecord(schema) ? { ...before, ...schema } : schema;
    }
    out.properties = properties;
  }
  if (Array.isArray(base.required) || Array.isArray(more.required)) {
    const before: unknown[] = Array.isArray(base.required) ? base.required : [];
    const added: unknown[] = Array.isArray(more.required) ? more.required : [];
    out.required = [...new Set([...before, ...added])];
  }
  return out;
}

function typesOf(schema: Json): string[] {
  if (typeof schema.type === 'string') return [schema.type];
  if (Array.isArray(schema.type)) return schema.type.filter((t) => typeof t === 'string');
  if (isRecord(schema.properties) || schema.additionalProperties !== undefined) return ['object'];
  if (schema.items !== undefined) return ['array'];
  return [];
}

const num = (value: unknown, fallback: number): number =>
  typeof value === 'number' ? value : fallback;

/** Strings people and attackers send: control characters, lone surrogates, RTL, emoji. */
export const ODD_STRINGS = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  '\ud800',
  '\udfff',
  'x\ud83dy',
  '\ufeff',
  '\uffff',
  '\u202eevil',
  '\u2028\u2029',
  'e\u0301',
  '😀',
  '𝕏'.repeat(3),
  '\u001b[31m',
  '\r\n',
  '\t',
  '"',
  '\\',
  '</script>',
  "'; DROP TABLE operations; --",
  '%00',
  '${jndi:ldap://x}',
  '__proto__',
  'null',
];

const stringUnits = fc.oneof(
  { arbitrary: fc.constant<'grapheme-ascii'>('grapheme-ascii'), weight: 3 },
  { arbitrary: fc.constant<'grapheme'>('grapheme'), weight: 2 },
  { arbitrary: fc.constant<'binary'>('binary'), weight: 1 },
);

const anyString = (maxLength: number) =>
  stringUnits.chain((unit) => fc.string({ unit, maxLength }));

/** Any JSON value, small, with odd strings and numbers among the ordinary ones. */
export const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 4 },
  { arbitrary: fc.jsonValue({ maxDepth: 2, stringUnit: 'binary' }), weight: 2 },
  { arbitrary: fc.constantFrom(...ODD_STRINGS), weight: 1 },
  {
    arbitrary: fc.constantFrom<unknown>(
      0,
      -0,
      1e308,
      5e-324,
      Number.MAX_SAFE_INTEGER,
      -Number.MAX_SAFE_INTEGER,
      0.1,
      {},
      [],
      { a: { b: { c: [1, 'x', null] } } },
    ),
    weight: 1,
  },
);

/** A date-time: mostly near now (so that a `runAt` may be accepted), some far. */
const dateTimes = fc.oneof(
  {
    arbitrary: fc.integer({ min: -30 * 86_400_000, max: 300 * 86_400_000 }).map((ms) => {
      const date = new Date(Date.now() + ms);
      return date.toISOString();
    }),
    weight: 6,
  },
  {
    arbitrary: fc
      .date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59Z') })
      .filter((d) => !Number.isNaN(d.getTime()))
      .map((d) => d.toISOString()),
    weight: 1,
  },
  {
    arbitrary: fc.constantFrom(
      '2026-01-01T00:00:00Z',
      '2026-01-01T00:00:00+02:00',
      '2026-01-01T00:00:00.123456789Z',
      '2026-01-01t00:00:00z',
    ),
    weight: 1,
  },
);

/**
 * Values of a pattern that its description bounds further (durations: "each from 1s to 24h"),
 * so that valid values are often accepted too; mixed with any string the pattern matches.
 */
const FRIENDLY: Record<string, readonly string[]> = {
  '^\\d+(\\.\\d+)?(ms|s|m|h|d)$': [
    '1s',
    '5s',
    '30s',
    '1m',
    '5m',
    '30m',
    '2h',
    '24h',
    '1.5s',
    '1000ms',
  ],
};

function patternArb(pattern: string, maxLength: number, where: string): fc.Arbitrary<string> {
  const friendly = FRIENDLY[pattern];
  const matching = anyMatching(pattern, maxLength, where);
  // The odd strings the pattern lets through, sent as valid values: fine where the pattern is
  // right, and where it was loosened by mistake (a label value with U+0000), a value that
  // the checks written from the docs (not from this document) catch once it is stored.
  const regex = new RegExp(pattern, 'u');
  const odd = ODD_STRINGS.filter((s) => s.length <= maxLength && regex.test(s));
  const arbs = [
    { arbitrary: matching, weight: 3 },
    ...(friendly ? [{ arbitrary: fc.constantFrom(...friendly), weight: 3 }] : []),
    ...(odd.length > 0 ? [{ arbitrary: fc.constantFrom(...odd), weight: 1 }] : []),
  ];
  return arbs.length === 1 ? matching : fc.oneof(...arbs);
}

function anyMatching(pattern: string, maxLength: number, where: string): fc.Arbitrary<string> {
  let regex: RegExp;
  try {
    regex = new RegExp(pattern, 'u');
  } catch {
    throw new NoStrategy(`${where}: the pattern ${pattern} is not a JavaScript regex`);
  }
  let arb: fc.Arbitrary<string>;
  try {
    arb = fc.stringMatching(regex);
    fc.sample(arb, { numRuns: 3, seed: 1 });
  } catch {
    // fast-check cannot read this one (`\p{...}` classes): ordinary strings that match it.
    arb = anyString(Math.min(maxLength, 40));
  }
  const matching = arb.filter((s) => s.length <= maxLength && regex.test(s));
  // Buildable only if values come out at all (a filter that rejects all would hang).
  try {
    fc.sample(matching, { numRuns: 5, seed: 2 });
  } catch {
    throw new NoStrategy(`${where}: no strings found for the pattern ${pattern}`);
  }
  return matching;
}

/** Valid values of a schema (as the document states it). Throws NoStrategy when it cannot. */
export function validArb(env: SchemaEnv, raw: unknown, where = '#'): fc.Arbitrary<unknown> {
  const schema = normalize(env, raw, where);
  if ('const' in schema) return fc.constant(schema.const);
  if (Array.isArray(schema.enum)) return fc.constantFrom(...(schema.enum as unknown[]));
  if (Array.isArray(schema.oneOf)) {
    const { oneOf, ...base } = schema;
    return fc.oneof(
      ...(oneOf as unknown[]).map((branch, i) =>
        validArb(env, merge(base, normalize(env, branch, `${where}/oneOf/${i}`)), where),
      ),
    );
  }
  const types = typesOf(schema);
  if (types.length === 0) return anyJson;
  return fc.oneof(...types.map((type) => validOfType(env, schema, type, where)));
}

function validOfType(env: SchemaEnv, schema: Json, type: string, where: string) {
  switch (type) {
    case 'null':
      return fc.constant(null);
    case 'boolean':
      return fc.boolean();
    case 'integer': {
      const min = num(schema.minimum, -(2 ** 31));
      const max = num(schema.maximum, 2 ** 31);
      return fc.oneof(
        fc.constantFrom(min, max, Math.min(min + 1, max), Math.max(max - 1, min)),
        fc.integer({ min, max }),
      ) as fc.Arbitrary<unknown>;
    }
    case 'number': {
      const min = num(schema.minimum, -1e9);
      const max = num(schema.maximum, 1e9);
      return fc.oneof(
        fc.constantFrom(min, max),
        fc.double({ min, max, noNaN: true, noDefaultInfinity: true }),
      ) as fc.Arbitrary<unknown>;
    }
    case 'string': {
      const minLength = num(schema.minLength, 0);
      const maxLength = num(schema.maxLength, 64);
      if (schema.format === 'date-time') return dateTimes.filter((s) => s.length <= maxLength);
      if (schema.format === 'uri') {
        return fc.constantFrom(...env.goodUrls).filter((s) => s.length <= maxLength);
      }
      if (typeof schema.pattern === 'string') {
        return patternArb(schema.pattern, maxLength, where).filter((s) => s.length >= minLength);
      }
      return fc
        .oneof(
          anyString(Math.min(maxLength, 40)),
          fc.constantFrom('x'.repeat(maxLength), 'é'.repeat(maxLength)),
        )
        .filter((s) => s.length >= minLength && s.length <= maxLength);
    }
    case 'array': {
      const items = validArb(env, schema.items ?? {}, `${where}/items`);
      const minLength = num(schema.minItems, 0);
      const maxLength = Math.max(minLength, Math.min(num(schema.maxItems, 5), 6));
      return schema.uniqueItems === true
        ? fc.uniqueArray(items, { minLength, maxLength, selector: (v) => JSON.stringify(v) })
        : fc.array(items, { minLength, maxLength });
    }
    case 'object':
      return validObject(env, schema, where);
    default:
      throw new NoStrategy(`${where}: the type ${type}`);
  }
}

function validObject(env: SchemaEnv, schema: Json, where: string): fc.Arbitrary<unknown> {
  const properties = isRecord(schema.properties) ? schema.properties : {};
  const required = new Set(Array.isArray(schema.required) ? (schema.required as string[]) : []);
  const model: Record<string, fc.Arbitrary<unknown>> = {};
  for (const [name, sub] of Object.entries(properties)) {
    model[name] = validArb(env, sub, `${where}/properties/${name}`);
  }
  for (const name of required) {
    if (!(name in model)) throw new NoStrategy(`${where}: required ${name} has no schema`);
  }
  const fixed = fc.record(model, { requiredKeys: [...required] });
  const extra = schema.additionalProperties;
  let arb: fc.Arbitrary<Json> = fixed;
  if (isRecord(extra)) {
    const names = isRecord(schema.propertyNames)
      ? validArb(env, { type: 'string', ...schema.propertyNames }, `${where}/propertyNames`)
          .filter((s) => typeof s === 'string')
          .map(String)
      : anyString(20);
    const values = validArb(env, extra, `${where}/additionalProperties`);
    const maxKeys = Math.min(num(schema.maxProperties, 4), 4);
    arb = fc
      .tuple(fixed, fc.dictionary(names, values, { maxKeys }))
      .map(([known, more]) => ({ ...more, ...known }));
  }
  const minProperties = num(schema.minProperties, 0);
  const maxProperties = num(schema.maxProperties, Number.MAX_SAFE_INTEGER);
  return arb.filter((o) => {
    const n = Object.keys(o).length;
    return n >= minProperties && n <= maxProperties;
  });
}

// ---- JSON Schema: near-misses ----------------------------------------------------------------

/** Numbers as JSON text a double cannot hold, or holds surprisingly. */
export const ODD_NUMBERS = [
  '1e400',
  '-1e400',
  '1e-400',
  '-0',
  '9223372036854775808',
  '9007199254740992',
  '-9007199254740993',
  '9007199254740991',
  '1.0',
  '1E2',
  '4.9e-324',
  '2.4e-324',
  '0e400',
  '123456789012345678901234567890',
  '0.1e1',
  '1e308',
];

/** Not numbers in JSON at all: the parser must refuse them. */
const NOT_JSON_NUMBERS = ['NaN', 'Infinity', '-Infinity', '01', '+1', '.5', '1.', '0x10', '1e'];

const INVALID_DATES = [
  '2026-02-30T00:00:00Z',
  '2026-13-01T00:00:00Z',
  '2026-01-01',
  '2026-01-01T25:00:00Z',
  '2026-01-01T00:00:61Z',
  '2026-01-01 00:00:00Z',
  '2026-01-01T00:00:00',
  '+275760-09-13T00:00:00.000Z',
  '9999-12-31T23:59:59Z',
  '0000-01-01T00:00:00Z',
  '2026-01-01T00:00:00+24:00',
  `2026-01-01T00:00:00.${'1'.repeat(60)}Z`,
  'now',
  '1767225600',
];

const ODD_URLS = [
  'http://',
  'http://[::1',
  'javascript:alert(1)',
  'ftp://127.0.0.1/x',
  'http://10.0.0.1/hook',
  'http://192.168.1.1/hook',
  'http://169.254.169.254/latest/meta-data',
  'http://[::1]/hook',
  'http://[::ffff:10.0.0.1]/hook',
  'http://0.0.0.0/hook',
  'http://2130706433/',
  'http://0x7f000001/',
  'http://user:pass@127.0.0.1/',
  'http://127.0.0.1:99999/',
  'http://a b/',
  'http://例え.テスト/',
  '//example.invalid/',
  'mailto:a@example.invalid',
  'https://example.invalid/%zz',
  'http://[fe80::1%25eth0]/',
  'HTTP://127.0.0.1/UPPER',
  'http://127.0.0.1/\u0000',
  'data:text/plain,hi',
];

const BAD_KEYS = ['', ' ', 'a b', 'ü', '\u0000', '-a', 'a'.repeat(64), '__proto__', 'constructor'];

/** Values of other JSON types than the schema's. */
const OTHER_TYPES: readonly unknown[] = [null, true, 0, -1, 1.5, '', 'x', [], {}, [null], { a: 1 }];

/** Values that are probably not valid for the schema (some are: it is a fuzz). */
export function mutantArb(env: SchemaEnv, raw: unknown, where = '#'): fc.Arbitrary<unknown> {
  const schema = normalize(env, raw, where);
  const types = typesOf(schema);
  const arbs: fc.Arbitrary<unknown>[] = [
    fc.constantFrom(...OTHER_TYPES),
    fc.constantFrom(...ODD_STRINGS),
    fc.constantFrom(...ODD_NUMBERS).map((text) => new Raw(text)),
  ];
  if (Array.isArray(schema.enum) || 'const' in schema) {
    const values = Array.isArray(schema.enum) ? (schema.enum as unknown[]) : [schema.const];
    const strings = values.filter((v): v is string => typeof v === 'string');
    if (strings.length > 0) {
      arbs.push(
        fc
          .constantFrom(...strings)
          .chain((s) =>
            fc.constantFrom(s.toUpperCase(), ` ${s}`, `${s}\u0000`, s.slice(0, -1), `${s}x`),
          ),
      );
    }
  }
  if (types.includes('string')) {
    const maxLength = num(schema.maxLength, 64);
    arbs.push(
      fc.constantFrom(
        new Big(maxLength + 1, 'a'),
        new Big(maxLength + 1, 'é'),
        new Big(Math.ceil((maxLength + 1) / 2), '😀'),
        new Big(maxLength * 4 + 10, 'x'),
      ),
    );
    if (typeof schema.pattern === 'string') {
      const valid = validArb(env, { ...schema, format: undefined }, where)
        .filter((v) => typeof v === 'string')
        .map(String);
      arbs.push(
        fc
          .tuple(
            valid,
            fc.nat(),
            fc.constantFrom(' ', '\u0000', '\ud800', '😀', '\n', '/', '%', '.'),
          )
          .map(([s, at, c]) => s.slice(0, at % (s.length + 1)) + c + s.slice(at % (s.length + 1))),
      );
    }
    if (schema.format === 'date-time') {
      arbs.push(
        fc.constantFrom(...INVALID_DATES),
        fc.constant(new Date(Date.now() + 400 * 86_400_000).toISOString()),
      );
    }
    if (schema.format === 'uri') arbs.push(fc.constantFrom(...ODD_URLS));
  }
  if (types.includes('integer') || types.includes('number')) {
    const min = num(schema.minimum, -(2 ** 31));
    const max = num(schema.maximum, 2 ** 31);
    arbs.push(
      fc.constantFrom(min - 1, max + 1, min - 0.5, max + 0.5, 1.5, 2 ** 53, -(2 ** 53), 1e308),
      fc.constantFrom(String(min), String(max), 'NaN'),
      fc.constantFrom(...NOT_JSON_NUMBERS).map((text) => new Raw(text)),
    );
  }
  if (types.includes('boolean')) arbs.push(fc.constantFrom('true', 'false', 1, 0));
  if (types.includes('array')) {
    const maxItems = num(schema.maxItems, 5);
    const items = validArb(env, schema.items ?? {}, `${where}/items`);
    arbs.push(
      fc.array(items, { minLength: maxItems + 1, maxLength: maxItems + 3 }),
      items.map((item) => new BigArray(10_000, item)),
      items.map((item) => [item, item]),
      fc.array(mutantArb(env, schema.items ?? {}, `${where}/items`), {
        minLength: 1,
        maxLength: 3,
      }),
    );
  }
  if (types.includes('object')) {
    const maxProperties = num(schema.maxProperties, 16);
    arbs.push(
      fc.constant({}),
      fc.constantFrom(...BAD_KEYS).map((key) => new Entries([[key, 'v']])),
      fc.constant(new BigObject(maxProperties + 1, 'v')),
      fc.constant(new BigObject(5_000, 'v')),
    );
  }
  return fc.oneof(...arbs);
}

/**
 * Valid values with one thing wrong somewhere inside: a member mutated (at any depth), a
 * required member left out, a member the schema does not know, a duplicate key.
 */
export function nearValidArb(
  env: SchemaEnv,
  raw: unknown,
  where = '#',
  depth = 0,
): fc.Arbitrary<unknown> {
  const schema = normalize(env, raw, where);
  if (Array.isArray(schema.oneOf)) {
    const { oneOf, ...base } = schema;
    return fc.oneof(
      ...(oneOf as unknown[]).map((branch, i) =>
        nearValidArb(env, merge(base, normalize(env, branch, `${where}/oneOf/${i}`)), where, depth),
      ),
    );
  }
  const types = typesOf(schema);
  const mutant = mutantArb(env, schema, where);
  if (depth > 3) return mutant;
  if (types.includes('object') && isRecord(schema.properties)) {
    const properties = schema.properties;
    const names = Object.keys(properties);
    const required = Array.isArray(schema.required) ? (schema.required as string[]) : [];
    const valid = validArb(env, schema, where).map((v) => (isRecord(v) ? v : {}));
    const arbs: fc.Arbitrary<unknown>[] = [
      // One member, at any depth, is wrong.
      fc
        .constantFrom(...names)
        .chain((name) =>
          fc
            .tuple(
              valid,
              fc.oneof(
                mutantArb(env, properties[name], `${where}/properties/${name}`),
                nearValidArb(env, properties[name], `${where}/properties/${name}`, depth + 1),
              ),
            )
            .map(([object, value]) => ({ ...object, [name]: value })),
        ),
      // A member the schema does not know.
      fc
        .tuple(valid, fc.constantFrom('extra', 'TYPE', 'type ', ...BAD_KEYS), anyJson)
        .map(([object, key, value]) => new Entries([...Object.entries(object), [key, value]])),
      // A duplicate key: JSON.parse keeps the last one (the wrong one, or the valid one).
      fc
        .tuple(valid, fc.constantFrom(...names), mutant, fc.boolean())
        .map(([object, name, value, wrongLast]) => {
          const entries = Object.entries(object);
          return wrongLast
            ? new Entries([...entries, [name, value]])
            : new Entries([[name, value], ...entries]);
        }),
    ];
    if (required.length > 0) {
      arbs.push(
        fc.tuple(valid, fc.constantFrom(...required)).map(([object, name]) => {
          return Object.fromEntries(Object.entries(object).filter(([key]) => key !== name));
        }),
      );
    }
    return fc.oneof(...arbs);
  }
  if (types.includes('object') && isRecord(schema.additionalProperties)) {
    const valid = validArb(env, schema, where).map((v) => (isRecord(v) ? v : {}));
    const value = mutantArb(env, schema.additionalProperties, `${where}/additionalProperties`);
    return fc.oneof(
      fc.tuple(valid, value).map(([object, v]) => ({ ...object, k: v })),
      fc
        .tuple(valid, fc.constantFrom(...BAD_KEYS))
        .map(([object, key]) => new Entries([...Object.entries(object), [key, 'v']])),
      mutant,
    );
  }
  if (types.includes('array') && schema.items !== undefined) {
    const valid = validArb(env, schema, where);
    const item = nearValidArb(env, schema.items, `${where}/items`, depth + 1);
    return fc.oneof(
      fc.tuple(valid, item, fc.nat()).map(([array, v, at]) => {
        if (!Array.isArray(array)) return [v];
        const copy: unknown[] = [...(array as unknown[])];
        copy[array.length === 0 ? 0 : at % array.length] = v;
        return copy;
      }),
      mutant,
    );
  }
  return mutant;
}

// ---- bodies --------------------------------------------------------------------------------

/** What is done to the JSON text once written. */
export type TextMutation =
  | { kind: 'none' }
  | { kind: 'truncate'; at: number }
  | { kind: 'bytes'; at: number; bytes: readonly number[] }
  | { kind: 'bom' }
  | { kind: 'utf16' }
  | { kind: 'pad'; before: string; after: string }
  | { kind: 'replace'; text: string };

export interface BodySpec {
  /** What the text is written from; undefined for no body at all. */
  value: unknown;
  text: TextMutation;
  /** How the body was made, for the report. */
  how: string;
}

/** Bytes that are not UTF-8: a lone continuation, an overlong NUL, a CESU surrogate, ... */
const INVALID_UTF8 = [
  [0xff],
  [0xc0, 0x80],
  [0xed, 0xa0, 0x80],
  [0xe2, 0x82],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0x80],
];

const textMutations: fc.Arbitrary<TextMutation> = fc.oneof(
  fc.double({ min: 0, max: 0.999, noNaN: true }).map((at) => ({ kind: 'truncate', at }) as const),
  fc
    .tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom(...INVALID_UTF8))
    .map(([at, bytes]) => ({ kind: 'bytes', at, bytes }) as const),
  fc
    .tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom([0x00], [0x01], [0x0a]))
    .map(([at, bytes]) => ({ kind: 'bytes', at, bytes }) as const),
  fc.constant({ kind: 'bom' } as const),
  fc.constant({ kind: 'utf16' } as const),
  fc
    .tuple(
      fc.constantFrom('', ' \r\n\t', '\u00a0', '\ufeff', '/**/', '//\n', ','),
      fc.constantFrom('', ' \n', '}', ']', ',', 'x', '\u0000', ' {}', '\n{"type":"x"}'),
    )
    .map(([before, after]) => ({ kind: 'pad', before, after }) as const),
  fc
    .constantFrom(
      'null',
      'true',
      '[]',
      '"x"',
      '123',
      '{',
      '}{',
      "{'type':'x'}",
      '{"a":1,}',
      '{"a"}',
      '{"\\u00"}',
      '{"a":"\\ud800"}',
      '{"a":"\\x41"}',
      '{"a":"\u0001"}',
      '{"a":NaN}',
      '\u0000',
      ' ',
      '{}'.repeat(2),
    )
    .map((text) => ({ kind: 'replace', text }) as const),
);

/** A body for a route that takes JSON: mostly near-valid, sometimes worse. */
export function bodyArb(
  env: SchemaEnv,
  body: NonNullable<RouteSpec['body']>,
  where: string,
): fc.Arbitrary<BodySpec> {
  const none: TextMutation = { kind: 'none' };
  const valid = validArb(env, body.schema, where);
  const near = nearValidArb(env, body.schema, where);
  const { maxBytes, maxDepth } = body;
  // Members that take any JSON (a submit's `input`): where deep and large values get stored.
  const top = normalize(env, body.schema, where);
  const anyMembers = isRecord(top.properties)
    ? Object.entries(top.properties)
        .filter(([name, sub]) => typesOf(normalize(env, sub, `${where}/${name}`)).length === 0)
        .map(([name]) => name)
    : [];
  // `at` even: an any-JSON member (when there is one); odd: one of the members there are.
  const put = (object: unknown, value: unknown, at: number) => {
    if (!isRecord(object)) return value;
    const keys = Object.keys(object);
    const key =
      anyMembers.length > 0 && at % 2 === 0
        ? (anyMembers[(at >> 1) % anyMembers.length] ?? 'x')
        : keys.length === 0
          ? 'x'
          : (keys[at % keys.length] ?? 'x');
    return { ...object, [key]: value };
  };
  return fc.oneof(
    { arbitrary: valid.map((value) => ({ value, text: none, how: 'valid' })), weight: 8 },
    { arbitrary: near.map((value) => ({ value, text: none, how: 'near-valid' })), weight: 8 },
    {
      // Nested around the limit, in a member (the body itself is level 1).
      arbitrary: fc
        .tuple(
          valid,
          fc.nat(),
          fc.constantFrom(maxDepth - 2, maxDepth - 1, maxDepth, maxDepth + 1, 200, 20_000),
          fc.constantFrom<'array' | 'object'>('array', 'object'),
        )
        .map(([object, at, depth, kind]) => ({
          value: put(object, new Deep(depth, kind, 1), at),
          text: none,
          how: `a member ${depth} levels deep`,
        })),
      weight: 3,
    },
    {
      // Strings around the body limit, in bytes: one byte, two and four per character.
      arbitrary: fc
        .tuple(
          valid,
          fc.nat(),
          fc.constantFrom<[number, string]>(
            [maxBytes - 400, 'a'],
            [maxBytes - 40, 'a'],
            [maxBytes + 1, 'a'],
            [Math.floor(maxBytes / 2) - 100, 'é'],
            [Math.floor(maxBytes / 4) + 10, '😀'],
            [Math.floor(maxBytes / 6) - 50, '\u0000'],
          ),
        )
        .map(([object, at, [length, unit]]) => ({
          value: put(object, new Big(length, unit), at),
          text: none,
          how: 'a string near the body limit',
        })),
      weight: 2,
    },
    {
      arbitrary: fc
        .tuple(fc.oneof(valid, near), textMutations)
        .map(([value, text]) => ({ value, text, how: `text: ${text.kind}` })),
      weight: 4,
    },
    {
      arbitrary: fc
        .tuple(valid, fc.nat(), fc.constantFrom(...ODD_NUMBERS, ...NOT_JSON_NUMBERS))
        .map(([object, at, token]) => ({
          value: put(object, new Raw(token), at),
          text: none,
          how: `the number ${token}`,
        })),
      weight: 2,
    },
    {
      arbitrary: fc.constantFrom(...OTHER_TYPES).map((value) => ({
        value,
        text: none,
        how: 'another JSON type',
      })),
      weight: 1,
    },
    {
      arbitrary: fc.constant({ value: undefined, text: none, how: 'no body' }),
      weight: 1,
    },
  );
}

/** A body for a route that takes none: mostly none, sometimes junk. */
export const strayBodyArb: fc.Arbitrary<BodySpec> = fc.oneof(
  {
    arbitrary: fc.constant<BodySpec>({ value: undefined, text: { kind: 'none' }, how: 'no body' }),
    weight: 6,
  },
  {
    arbitrary: fc
      .tuple(anyJson, textMutations)
      .map(([value, text]) => ({ value, text, how: `a stray body, ${text.kind}` })),
    weight: 2,
  },
);

/** The bytes of a body (null for none). */
export function bodyBytes(spec: BodySpec): Buffer | null {
  if (spec.value === undefined && spec.text.kind !== 'replace') return null;
  const text = spec.value === undefined ? '' : writeJson(spec.value);
  const mutation = spec.text;
  switch (mutation.kind) {
    case 'none':
      return Buffer.from(text, 'utf8');
    case 'truncate':
      return Buffer.from(text.slice(0, Math.floor(text.length * mutation.at)), 'utf8');
    case 'bytes': {
      const bytes = Buffer.from(text, 'utf8');
      // Inside a string when there is one after the position: the parser reads it there.
      const at = Math.floor(bytes.length * mutation.at);
      const quote = bytes.indexOf(0x22, at);
      const cut = quote === -1 ? at : quote + 1;
      return Buffer.concat([
        bytes.subarray(0, cut),
        Buffer.from(mutation.bytes),
        bytes.subarray(cut),
      ]);
    }
    case 'bom':
      return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text, 'utf8')]);
    case 'utf16':
      return Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
    case 'pad':
      return Buffer.from(mutation.before + text + mutation.after, 'utf8');
    case 'replace':
      return Buffer.from(mutation.text, 'utf8');
  }
}

// ---- what a server must refuse, read from the bytes alone ---------------------------------

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** The JSON value of a body as RFC 8259 reads it (a UTF-8 BOM dropped), or why it is none. */
export function parseBody(
  bytes: Buffer,
): { ok: true; value: unknown } | { ok: false; why: string } {
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    return { ok: false, why: 'not UTF-8' };
  }
  if (text.length === 0) return { ok: false, why: 'empty' };
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false, why: 'not JSON' };
  }
}

/** The deepest nesting of arrays and objects in a JSON text (strings skipped). */
export function jsonDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
    } else if (c === '[' || c === '{') deepest = Math.max(deepest, ++depth);
    else if (c === ']' || c === '}') depth--;
  }
  return deepest;
}

/**
 * The first number of a JSON text that docs/limits.md says is refused: not finite, an
 * integer beyond ±(2^53 − 1), or non-zero digits that read as 0. Null when none.
 */
export function inexactNumber(text: string): string | null {
  const tokens = text
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .match(/-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g);
  for (const token of tokens ?? []) {
    const value = Number(token);
    const integer = !/[.eE]/.test(token);
    const mantissa = token.split(/[eE]/)[0] ?? '';
    if (
      !Number.isFinite(value) ||
      (integer && !Number.isSafeInteger(value)) ||
      (value === 0 && /[1-9]/.test(mantissa))
    ) {
      return token;
    }
  }
  return null;
}

/** JSON with object keys sorted at every depth: equal values, equal text (-0 is 0). */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isRecord(value)) {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

// ---- headers and query strings ----------------------------------------------------------------

/** A header value: bytes as sent, or a value the test works out when it sends the request. */
export type HeaderValue =
  | { kind: 'text'; text: string }
  | { kind: 'bytes'; bytes: readonly number[] }
  /** `scale` times the header limit, of `x`. */
  | { kind: 'big'; scale: number }
  | { kind: 'etag'; form: 'current' | 'weak' | 'stale' | 'list' | 'padded' };

export interface HeaderSpec {
  name: string;
  value: HeaderValue;
}

const text = (t: string): HeaderValue => ({ kind: 'text', text: t });

const printable = fc.string({ unit: 'grapheme-ascii', maxLength: 40 });

function etagValues(): fc.Arbitrary<HeaderValue> {
  const forms: HeaderValue[] = [
    ...Array.from({ length: 6 }, (): HeaderValue => ({ kind: 'etag', form: 'current' })),
    { kind: 'etag', form: 'weak' },
    { kind: 'etag', form: 'stale' },
    { kind: 'etag', form: 'list' },
  ];
  // `"01"` for `"1"`: not a match (RFC 9110 compares entity tags as strings).
  forms.push({ kind: 'etag', form: 'padded' });
  return fc.oneof(
    { arbitrary: fc.constantFrom(...forms), weight: 8 },
    {
      arbitrary: fc
        .constantFrom(
          '*',
          '"0"',
          '"1"',
          '""',
          'W/"1"',
          '"99999999999999999999"',
          '1',
          '*, "1"',
          ',',
        )
        .map(text),
      weight: 2,
    },
    { arbitrary: printable.map(text), weight: 1 },
  );
}

const IDEMPOTENCY_POOL = ['k0', 'k1', 'k2', 'k3', '"k1"', '"k2"', ' k3 '];

/** Values of the headers the API reads, by name; any other header by its schema. */
export function headerValueArb(env: SchemaEnv, param: ParamSpec): fc.Arbitrary<HeaderValue> {
  const overlong: HeaderValue = { kind: 'big', scale: 1.05 };
  const odd = fc.oneof(
    fc.constantFrom(text(''), text(' '), text('a\tb'), overlong),
    fc
      .constantFrom([0x63, 0x61, 0x66, 0xe9], [0xc3, 0xa9], [0xff, 0xfe])
      .map((bytes): HeaderValue => ({ kind: 'bytes', bytes })),
  );
  switch (param.name.toLowerCase()) {
    case 'prefer':
      return fc.oneof(
        {
          arbitrary: fc
            .constantFrom(
              'respond-async',
              'return=minimal',
              'return=representation',
              'wait=0',
              'wait=0, respond-async',
              'return=minimal, return=representation',
              'respond-async, return=minimal',
              'wait=abc',
              'wait=-1',
              'wait=99999999999',
              'wait="0"',
              'WAIT=0',
              'respond-async; foo=bar',
              ',,,',
              '"',
              'wait',
              'handling=strict',
              'return="minimal"',
            )
            .map(text),
          weight: 40,
        },
        // A hold: the server waits up to maxWaitSeconds. Rare, so the file stays fast.
        { arbitrary: fc.constant(text('wait=1')), weight: 1 },
        { arbitrary: printable.map(text), weight: 4 },
        { arbitrary: odd, weight: 3 },
      );
    case 'if-match':
    case 'if-none-match':
      return fc.oneof({ arbitrary: etagValues(), weight: 6 }, { arbitrary: odd, weight: 1 });
    case 'idempotency-key':
      return fc.oneof(
        { arbitrary: fc.constantFrom(...IDEMPOTENCY_POOL).map(text), weight: 6 },
        { arbitrary: fc.uuid().map(text), weight: 3 },
        {
          arbitrary: fc
            .constantFrom(
              'a'.repeat(255),
              'a'.repeat(256),
              `"${'a'.repeat(255)}"`,
              `"${'a'.repeat(256)}"`,
              '"unterminated',
              '"a";p=1',
              '"a\\"b"',
              '"\\x"',
              '""',
              'k\u007f',
            )
            .map(text),
          weight: 2,
        },
        { arbitrary: odd, weight: 2 },
      );
    case 'traceparent':
      return fc.oneof(
        {
          arbitrary: fc
            .tuple(
              fc.stringMatching(/^[0-9a-f]{32}$/),
              fc.stringMatching(/^[0-9a-f]{16}$/),
              fc.constantFrom('00', '01', 'cc'),
              fc.constantFrom('', '', '-extra', 'x'),
            )
            .map(([trace, parent, version, tail]) =>
              text(`${version}-${trace}-${parent}-01${tail}`),
            ),
          weight: 4,
        },
        {
          arbitrary: fc
            .constantFrom(
              '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
              'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
              '00-00000000000000000000000000000000-b7ad6b7169203331-01',
              '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01',
              '00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01',
              '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-',
              '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0',
              '01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-ever',
              '01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x',
              'garbage',
            )
            .map(text),
          weight: 2,
        },
        { arbitrary: odd, weight: 1 },
      );
    case 'last-event-id':
      return fc.oneof(
        fc.nat().map((n) => text(String(n))),
        fc.constantFrom('9'.repeat(16), '-1', 'abc', '1, 2', '1.5', '0x10').map(text),
        odd,
      );
    default:
      return fc.oneof(
        validArb(env, param.schema, `header ${param.name}`).map((v) => text(String(v))),
        odd,
      );
  }
}

/** Headers any request may carry besides those of its route: odd ones, repeated ones. */
export const STRAY_HEADERS: readonly [string, HeaderValue][] = [
  ['X-Fuzz', text('1')],
  ['Accept', text('application/json')],
  ['Accept', text('*/*')],
  ['Accept', text('text/html')],
  ['Accept', text('application/problem+json;q=0.9, */*;q=0.1')],
  ['Accept-Encoding', text('gzip, br')],
  ['Content-Encoding', text('gzip')],
  ['Content-Encoding', text('identity')],
  ['Expect', text('100-continue')],
  ['Expect', text('nonsense')],
  ['Origin', text('http://evil.invalid')],
  ['X-Forwarded-For', text('203.0.113.9, 10.0.0.1')],
  ['X-Forwarded-Proto', text('https')],
  ['Forwarded', text('for=203.0.113.9;proto=https;host=evil.invalid')],
  ['Range', text('bytes=0-1')],
  ['If-Modified-Since', text('yesterday')],
  ['Cookie', text('a=b; c=d')],
  ['Upgrade', text('websocket')],
  ['Accept-Language', { kind: 'bytes', bytes: [0xe9, 0x74, 0xe9] }],
  ['iDEMPOTENCY-kEY', text('k1')],
  ['Content-Type', text('application/json')],
  ['Authorization', text('Bearer not-a-key-but-long-enough-1234')],
  ['Host', text('127.0.0.1')],
  ['Idempotency-Key', text('k2')],
  ['Prefer', text('respond-async')],
  ['If-Match', text('*')],
  ['X-Long', { kind: 'big', scale: 0.5 }],
];

/** How a request is framed on the wire beyond its headers. */
export type Framing =
  | 'length'
  | 'chunked'
  | 'no-host'
  | 'bad-host'
  | 'obs-fold'
  | 'no-colon'
  | 'space-before-colon'
  | 'nul-in-header'
  | 'chunked-and-length'
  | 'many-headers'
  | 'lf-only'
  | AbandonedFraming;

/**
 * A client that goes away before its request is whole: the head says a body of
 * Content-Length bytes (or chunked) and fewer come, then the socket is closed (FIN), reset
 * (RST) or half-closed (the client still reads), without waiting for an answer. Nobody is
 * left to answer: the server must neither fail (a 500, an error-level log line) nor act on
 * the part it got.
 */
export type AbandonedFraming =
  | 'gone-after-head'
  | 'gone-mid-body'
  | 'gone-mid-chunk'
  | 'reset-mid-body'
  | 'half-closed-mid-body';

export const ABANDONED_FRAMINGS: readonly AbandonedFraming[] = [
  'gone-after-head',
  'gone-mid-body',
  'gone-mid-chunk',
  'reset-mid-body',
  'half-closed-mid-body',
];

export function isAbandoned(framing: Framing): framing is AbandonedFraming {
  return (ABANDONED_FRAMINGS as readonly string[]).includes(framing);
}

/** Framings that make a request malformed: the server must refuse it, whatever it holds. */
export const MALFORMED_FRAMINGS: readonly Framing[] = [
  'no-host',
  'bad-host',
  'obs-fold',
  'no-colon',
  'space-before-colon',
  'nul-in-header',
  'chunked-and-length',
];

export const framingArb: fc.Arbitrary<Framing> = fc.oneof(
  { arbitrary: fc.constant<Framing>('length'), weight: 40 },
  { arbitrary: fc.constant<Framing>('chunked'), weight: 4 },
  {
    arbitrary: fc.constantFrom<Framing>(...MALFORMED_FRAMINGS, 'many-headers', 'lf-only'),
    weight: 3,
  },
  // Often enough that every write route sees a few (about one request in ten).
  { arbitrary: fc.constantFrom<Framing>(...ABANDONED_FRAMINGS), weight: 5 },
);

export const contentTypeArb: fc.Arbitrary<string | null> = fc.oneof(
  { arbitrary: fc.constant('application/json'), weight: 20 },
  {
    arbitrary: fc.constantFrom(
      'application/json; charset=utf-8',
      'application/json;charset=UTF-8',
      'application/json; charset="utf-8"',
      'application/json; charset=iso-8859-1',
      'application/json; charset=utf-16',
      'APPLICATION/JSON',
      ' application/json ',
      'application/merge-patch+json',
      'application/problem+json',
      'application/vnd.accepted+json; version=1',
    ),
    weight: 4,
  },
  {
    arbitrary: fc.constantFrom<string | null>(
      null,
      '',
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/xml',
      'application/jsonx',
      'application/json5',
      'application/json, text/plain',
      'json',
      '*/*',
      'application/',
      ';',
    ),
    weight: 3,
  },
);

/** Whether the server's parser takes this type for JSON (application/json, application/*+json). */
export function isJsonType(type: string | null): boolean {
  if (type === null) return false;
  const essence = (type.split(';')[0] ?? '').trim().toLowerCase();
  return essence === 'application/json' || /^application\/[a-z0-9.+-]*\+json$/.test(essence);
}

/** Whether this type is surely not JSON (the server must not take the body as JSON). */
export function isSurelyNotJson(type: string | null): boolean {
  if (type === null) return true;
  const essence = (type.split(';')[0] ?? '').trim().toLowerCase();
  return (
    !/json/.test(essence) || essence === 'application/jsonx' || essence === 'application/json5'
  );
}

/** One query parameter: values as sent (percent-encoded by the test), repeated or joined. */
export interface QuerySpec {
  name: string;
  values: string[];
  style: 'repeat' | 'comma';
  /** Encoded by hand: `%zz`, `%00`, a raw `&`. Read as it is. */
  raw?: string;
}

/** Values of a query parameter: valid, wrong, repeated, oddly encoded. */
export function queryArb(env: SchemaEnv, param: ParamSpec): fc.Arbitrary<QuerySpec> {
  const schema = normalize(env, param.schema, `query ${param.name}`);
  if (param.name === 'wait') {
    // A long poll holds the answer (up to the server's cap): mostly none, so the file stays fast.
    return fc
      .oneof(
        { arbitrary: fc.constantFrom('0', '00', '-0', ''), weight: 12 },
        { arbitrary: fc.constantFrom('1', '3600', '3601', '-1', '1.5', '1e400', 'x'), weight: 2 },
      )
      .map((v): QuerySpec => ({ name: param.name, values: [v], style: 'repeat' }));
  }
  const isArray = typesOf(schema).includes('array');
  const asText = (v: unknown) => (typeof v === 'string' ? v : writeJson(v));
  const valid = validArb(env, schema, `query ${param.name}`);
  const mutant = mutantArb(env, schema, `query ${param.name}`);
  const one = (arb: fc.Arbitrary<unknown>) =>
    arb.map((v): QuerySpec => {
      if (isArray && Array.isArray(v)) {
        return { name: param.name, values: v.map(asText), style: 'repeat' };
      }
      return { name: param.name, values: [asText(v)], style: 'repeat' };
    });
  return fc.oneof(
    { arbitrary: one(valid), weight: 6 },
    {
      arbitrary: valid.map((v): QuerySpec => ({
        name: param.name,
        values: Array.isArray(v) ? [v.map(asText).join(',')] : [asText(v)],
        style: 'comma',
      })),
      weight: 2,
    },
    { arbitrary: one(mutant), weight: 4 },
    {
      arbitrary: fc
        .tuple(one(valid), one(valid))
        .map(([a, b]): QuerySpec => ({ ...a, values: [...a.values, ...b.values] })),
      weight: 1,
    },
    {
      arbitrary: fc
        .constantFrom(
          '%zz',
          '%00',
          '%ED%A0%80',
          '%F0%9F%98%80',
          '',
          '%',
          'a%2Cb',
          '+',
          '%2B',
          'a&b=c',
        )
        .map((raw): QuerySpec => ({ name: param.name, values: [], style: 'repeat', raw })),
      weight: 2,
    },
  );
}

/** Percent-encodes UTF-8 (a lone surrogate becomes U+FFFD, as TextEncoder writes it). */
export function pct(value: string): string {
  return [...Buffer.from(value, 'utf8')]
    .map((b) =>
      /[A-Za-z0-9\-._~]/.test(String.fromCharCode(b))
        ? String.fromCharCode(b)
        : `%${b.toString(16).toUpperCase().padStart(2, '0')}`,
    )
    .join('');
}

/** A path parameter: an id the server knows (of this tenant or another), a made-up one, junk. */
export type IdChoice =
  | { kind: 'pool'; index: number }
  | { kind: 'other-tenant'; index: number }
  | { kind: 'gone'; index: number }
  | { kind: 'other-kind'; index: number }
  | { kind: 'literal'; text: string; encoded: boolean };

export function idArb(env: SchemaEnv, param: ParamSpec): fc.Arbitrary<IdChoice> {
  const valid = validArb(env, param.schema, `path ${param.name}`).map((v): IdChoice => ({
    kind: 'literal',
    text: String(v),
    encoded: false,
  }));
  return fc.oneof(
    { arbitrary: fc.nat().map((index): IdChoice => ({ kind: 'pool', index })), weight: 12 },
    { arbitrary: valid, weight: 2 },
    { arbitrary: fc.nat().map((index): IdChoice => ({ kind: 'other-tenant', index })), weight: 1 },
    { arbitrary: fc.nat().map((index): IdChoice => ({ kind: 'gone', index })), weight: 1 },
    { arbitrary: fc.nat().map((index): IdChoice => ({ kind: 'other-kind', index })), weight: 1 },
    {
      arbitrary: fc
        .constantFrom(
          'x',
          'a'.repeat(101),
          '%zz',
          '%00',
          '..',
          '%2F',
          '%3A',
          'op_x:retry',
          'op_%F0%9F%98%80',
          '%ED%A0%80',
          ' ',
          '*',
        )
        .map((t): IdChoice => ({ kind: 'literal', text: t, encoded: true })),
      weight: 2,
    },
  );
}

// ---- WebSocket messages ------------------------------------------------------------------------

/** What a WebSocket message may name: the operations of the client's tenant, of another, deleted ones. */
export interface WsTargets {
  own: readonly string[];
  other: readonly string[];
  gone: readonly string[];
  /** Subscription ids of a connection are `s1`, `s2`, ...: unsubscribes name these, up to here. */
  maxSubscription: number;
}

/** One WebSocket message of a burst, as the client sends it. */
export interface WsMessageSpec {
  /** What the text is written from (with the markers of `writeJson`). */
  value: unknown;
  /**
   * `fresh`: the test sets a request id of its own (the last member of an object), so that
   * the answer can be told apart; `keep`: the id as generated (none, or a wrong one).
   */
  id: 'fresh' | 'keep';
  /** Text sent instead of the JSON (not JSON at all), or the JSON cut short. */
  text: { kind: 'none' } | { kind: 'replace'; text: string } | { kind: 'truncate'; at: number };
  /** Sent in a binary frame. */
  binary: boolean;
  how: string;
}

/** The client messages of the AsyncAPI document (`#/components/messages/ws.*`). */
const wsPayload = (name: string) => ({ $ref: `#/components/messages/ws.${name}/payload` });

/** Messages the fuzz sends none of: they write (submit, cancel); a burst only reads. */
export function wsWrites(value: unknown): boolean {
  const types = isRecord(value)
    ? [value.type]
    : value instanceof Entries
      ? value.entries.filter(([key]) => key === 'type').map(([, v]) => v)
      : [];
  return types.some((type) => type === 'submit' || type === 'cancel');
}

/**
 * Messages of the WebSocket protocol (docs/streams.md), from the schemas of the AsyncAPI
 * document (`env.doc`): mostly valid subscribes (to a filter, or to an operation of the
 * tenant, of another tenant, deleted or made up) and unsubscribes (of subscriptions the
 * connection has, or may have, or never had), and near-valid and hostile ones around them:
 * a member wrong, both `operation` and `filter` or neither, text that is not JSON, too deep,
 * numbers out of range, `__proto__`, a binary frame.
 */
export function wsMessageArb(env: SchemaEnv, targets: WsTargets): fc.Arbitrary<WsMessageSpec> {
  const none = { kind: 'none' } as const;
  const spec = (value: unknown, how: string, id: 'fresh' | 'keep' = 'fresh'): WsMessageSpec => ({
    value,
    id,
    text: none,
    binary: false,
    how,
  });
  const operation = fc.oneof(
    ...[
      { ids: targets.own, weight: 8, how: 'an operation of the tenant' },
      { ids: targets.other, weight: 1, how: "another tenant's operation" },
      { ids: targets.gone, weight: 1, how: 'a deleted operation' },
    ]
      .filter((t) => t.ids.length > 0)
      .map((t) => ({
        arbitrary: fc.constantFrom(...t.ids).map((id) => [id, t.how] as const),
        weight: t.weight,
      })),
    { arbitrary: fc.constant([null, 'a made-up operation'] as const), weight: 1 },
  );
  const subscribe = fc
    .tuple(validArb(env, wsPayload('subscribe'), 'ws.subscribe'), operation)
    .map(([value, [id, how]]) => {
      // One of the two (the document's `oneOf`): the generator may have made both.
      const { operation: made, filter, ...rest } = isRecord(value) ? value : {};
      if (typeof made !== 'string') return spec({ ...rest, filter }, 'subscribe to a filter');
      return spec({ ...rest, operation: id ?? made }, `subscribe to ${how}`);
    });
  const subscription = fc.oneof(
    { arbitrary: fc.integer({ min: 1, max: targets.maxSubscription }), weight: 6 },
    { arbitrary: fc.constantFrom('s0', 's-1', 'S1', 's01', '', ' s1', 'x'), weight: 1 },
  );
  const unsubscribe = fc
    .tuple(validArb(env, wsPayload('unsubscribe'), 'ws.unsubscribe'), subscription)
    .map(([value, n]) =>
      spec(
        { ...(isRecord(value) ? value : {}), subscription: typeof n === 'number' ? `s${n}` : n },
        'unsubscribe',
      ),
    );
  const nearValid = fc
    .tuple(
      fc.constantFrom('subscribe', 'unsubscribe', 'ping'),
      fc.constantFrom<'fresh' | 'keep'>('fresh', 'keep'),
    )
    .chain(([name, id]) =>
      nearValidArb(env, wsPayload(name), `ws.${name}`).map((value) =>
        spec(value, `a near-valid ${name}`, id),
      ),
    );
  const hostile = fc.oneof(
    fc
      .constantFrom(
        '',
        ' ',
        '{',
        'null',
        '[]',
        '"ping"',
        'ping',
        '\u0000',
        '{"type":"ping"',
        '{"type":"ping",}',
        '{"type":"ping"}{"type":"ping"}',
        "{'type':'ping'}",
        '{"type":"ping","id":1e400}',
      )
      .map((text): WsMessageSpec => ({ ...spec({}, 'not JSON'), text: { kind: 'replace', text } })),
    fc
      .tuple(subscribe, fc.double({ min: 0, max: 0.999, noNaN: true }))
      .map(([s, at]): WsMessageSpec => ({
        ...s,
        text: { kind: 'truncate', at },
        how: 'cut short',
      })),
    fc
      .tuple(
        fc.constantFrom(63, 64, 65, 66, 200, 5000),
        fc.constantFrom<'array' | 'object'>('array', 'object'),
      )
      .map(([depth, kind]) =>
        spec(
          { type: 'subscribe', filter: {}, x: new Deep(depth, kind, 1) },
          `${depth} levels deep`,
        ),
      ),
    fc
      .tuple(fc.constantFrom('after', 'id'), fc.constantFrom(...ODD_NUMBERS))
      .map(([member, number]) =>
        spec(
          new Entries([
            ['type', 'subscribe'],
            ['filter', {}],
            [member, new Raw(number)],
          ]),
          `${member} ${number}`,
          member === 'id' ? 'keep' : 'fresh',
        ),
      ),
    fc.constantFrom(
      spec({ type: 'subscribe' }, 'subscribe to nothing'),
      spec({ type: 'subscribe', filter: {}, operation: targets.own[0] ?? 'op_x' }, 'both'),
      spec(
        new Entries([
          ['type', 'subscribe'],
          ['filter', {}],
          ['__proto__', { a: 1 }],
        ]),
        '__proto__',
      ),
      spec(
        new Entries([
          ['type', 'subscribe'],
          ['filter', { constructor: { prototype: {} } }],
        ]),
        'constructor.prototype',
      ),
      spec(
        new Entries([
          ['type', 'ping'],
          ['type', 'subscribe'],
          ['filter', {}],
        ]),
        'type twice',
      ),
      spec({ type: 'subscribe', filter: {}, id: 'x'.repeat(65) }, 'an id of 65 characters', 'keep'),
      spec({ type: 'subscribe', filter: {}, id: { a: 1 } }, 'an object id', 'keep'),
      spec({ type: 'unsubscribe' }, 'unsubscribe nothing'),
      spec({ type: 'subscriptions', filter: {} }, 'an unknown type'),
      spec({ filter: {} }, 'no type'),
    ),
    fc
      .constantFrom({ type: 'subscribe', filter: {} }, { type: 'ping' })
      .map((value): WsMessageSpec => ({ ...spec(value, 'a binary frame'), binary: true })),
  );
  return fc
    .oneof(
      { arbitrary: subscribe, weight: 10 },
      { arbitrary: unsubscribe, weight: 4 },
      { arbitrary: fc.constant(spec({ type: 'ping' }, 'ping')), weight: 1 },
      { arbitrary: nearValid, weight: 3 },
      { arbitrary: hostile, weight: 3 },
    )
    .filter((m) => !wsWrites(m.value) && writeJson(m.value).length <= WS_FUZZ_MAX_TEXT);
}

/** The longest message the fuzz writes: far below the 1 MiB a message may be (close 1009). */
const WS_FUZZ_MAX_TEXT = 256 * 1024;

/**
 * Bursts of messages, each sent at once (without waiting for an answer): some within the
 * subscription cap, most past it, so that every burst tests the cap while its subscribes
 * still read the store.
 */
export function wsBurstsArb(
  env: SchemaEnv,
  targets: WsTargets,
  cap: number,
): fc.Arbitrary<WsMessageSpec[][]> {
  const message = wsMessageArb(env, targets);
  const burst = fc.oneof(
    { arbitrary: fc.array(message, { minLength: 1, maxLength: cap }), weight: 1 },
    { arbitrary: fc.array(message, { minLength: cap, maxLength: 3 * cap }), weight: 2 },
  );
  return fc.array(burst, { minLength: 1, maxLength: 3 });
}

// ---- operations that change while streams open -------------------------------------------------

/** An operation that changes a few times, and when its streams and long polls begin. */
export interface ChangingOperation {
  submit: { type: string; input: unknown };
  /** Milliseconds after the submit at which a stream opens without a cursor. */
  snapshotsAt: number[];
  /** Long-poll its monitor (`Prefer: wait` with the ETag of the last answer) until it ends. */
  poll: boolean;
}

/**
 * A few operations of the demo types that move through several versions within a fraction
 * of a second (`demo.progress`: a progress event a step; `demo.flaky`: attempts that fail
 * and are retried), each with the moments its snapshots are taken.
 */
export const changingOperationsArb: fc.Arbitrary<ChangingOperation[]> = fc.array(
  fc.record({
    submit: fc.oneof(
      {
        arbitrary: fc
          .record({ steps: fc.integer({ min: 2, max: 12 }), ms: fc.integer({ min: 2, max: 20 }) })
          .map((input) => ({ type: 'demo.progress', input })),
        weight: 3,
      },
      {
        arbitrary: fc
          .integer({ min: 1, max: 2 })
          .map((failTimes) => ({ type: 'demo.flaky', input: { failTimes } })),
        weight: 1,
      },
    ),
    snapshotsAt: fc.array(fc.integer({ min: 0, max: 120 }), { minLength: 1, maxLength: 3 }),
    poll: fc.oneof(
      { arbitrary: fc.constant(true), weight: 3 },
      { arbitrary: fc.constant(false), weight: 1 },
    ),
  }),
  { minLength: 4, maxLength: 6 },
);
