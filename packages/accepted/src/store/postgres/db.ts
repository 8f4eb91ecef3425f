import type postgres from 'postgres';

/** Bigints (times, seq) come back as numbers: every one this adapter stores is below 2^53. */
export const TYPES = {
  int8: {
    to: 20,
    from: [20],
    serialize: (value: number) => String(value),
    parse: (value: string) => Number(value),
  },
};
export type Db = postgres.Sql<{ int8: number }>;
export type Tx = postgres.TransactionSql<{ int8: number }>;
export type Param = string | number | boolean | null | readonly (string | number | null)[];

/** Runs one prepared statement (prepared once per connection, by its text). */
export function query<T>(db: Db | Tx, text: string, params: readonly Param[] = []): Promise<T[]> {
  return db.unsafe(text, params as never[], { prepare: true }) as unknown as Promise<T[]>;
}
