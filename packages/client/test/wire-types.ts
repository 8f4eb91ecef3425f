// The client's types against the server's wire schemas. `npm run typecheck` compiles this
// file: if a schema in packages/accepted/src/wire/schemas.ts gains, loses or changes a field
// (or its optionality) and the client's types in src/types.ts do not follow, a line below
// stops compiling and CI fails. test/wire-drift.test.ts (server package) proves it does.
import type { FromSchema } from 'json-schema-to-ts';
import type {
  EVENT_PAGE_SCHEMA,
  EVENT_SCHEMA,
  MONITOR_SCHEMA,
  OPERATION_PAGE_SCHEMA,
  STREAM_TOKEN_SCHEMA,
} from '../../accepted/src/wire/schemas.ts';
import type { Operation, OperationEvent, OperationPage, StreamToken } from '../src/types.ts';

/**
 * A type in a form two structurally equal types share: each property becomes its (normalised)
 * type paired with whether it is optional, arrays and unions are normalised member by member,
 * and `unknown` stays a marker of its own (it would otherwise swallow any comparison).
 */
type Norm<T> = unknown extends T
  ? 'unknown'
  : T extends readonly (infer E)[]
    ? Norm<E>[]
    : T extends object
      ? {
          [K in keyof T]-?: [
            Norm<Exclude<T[K], undefined>>,
            object extends Pick<T, K> ? 'optional' : 'required',
          ];
        }
      : T;

type Equal<A, B> =
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the identity check of two types
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Same<A, B> = Equal<Norm<A>, Norm<B>>;
const same = <T extends true>(value: T) => value;

// `$ref`s are not followed by FromSchema: the pages are checked on their own fields, with the
// referenced item types checked above them.
type WithoutRefs<P, K extends keyof P> = Omit<P, K>;

same<Same<Operation, FromSchema<typeof MONITOR_SCHEMA>>>(true);
same<Same<OperationEvent, FromSchema<typeof EVENT_SCHEMA>>>(true);
same<Same<StreamToken, FromSchema<typeof STREAM_TOKEN_SCHEMA>>>(true);
same<
  Same<
    WithoutRefs<OperationPage, 'items'>,
    WithoutRefs<FromSchema<typeof OPERATION_PAGE_SCHEMA>, 'items'>
  >
>(true);
type EventPage = { events: OperationEvent[]; nextAfter: number };
same<
  Same<
    WithoutRefs<EventPage, 'events'>,
    WithoutRefs<FromSchema<typeof EVENT_PAGE_SCHEMA>, 'events'>
  >
>(true);
