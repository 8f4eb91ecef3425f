import pg from 'pg';
import { AcceptedError } from '../../domain/errors.ts';

/**
 * The PostgreSQL driver as this adapter uses it: a pool of connections (node-postgres), one
 * connection per transaction, and one more for LISTEN that reconnects by itself. Every failure
 * that means "the server is away" (refused or lost connections, a shutting-down server) comes
 * out as `STORE_UNAVAILABLE`, so that callers answer 503 and retry; nothing here can throw
 * outside a promise (node-postgres reports dead idle connections as events, handled below).
 *
 * node-postgres replaced postgres.js (porsager) after a PostgreSQL restart under load killed
 * nodes: postgres.js 3.4 writes to a closed socket from a timer when a connection drops with a
 * small write pending (porsager/postgres#1066, #1154, #1208), an uncatchable TypeError.
 */

export type Param = string | number | boolean | null | readonly (string | number | null)[];

/** Bigints (times, seq) come back as numbers: every one this adapter stores is below 2^53. */
const parseInt8 = (value: string): number => Number(value);
const TYPES = {
  getTypeParser: (oid: number, format?: 'text' | 'binary'): unknown =>
    oid === 20
      ? parseInt8
      : (pg.types.getTypeParser as (o: number, f?: string) => unknown)(oid, format),
};

/** SQLSTATE classes and codes that mean the server is not there (or not yet, or no longer). */
const UNAVAILABLE_SQLSTATES = /^(08|57P0[1-4]|53300|53400)/;
// `timeout expired` is the client's own connect timeout (a server that never answers the
// startup message); `timeout exceeded when trying to connect` the pool's wait for a connection.
const UNAVAILABLE_MESSAGES =
  /Connection terminated|connection error|not queryable|timeout expired|timeout exceeded when trying to connect|Client was closed|Cannot use a pool after calling end/i;

/** SQLSTATEs of a transaction rolled back for a conflict with another: a deadlock, serialization. */
const CONFLICT_SQLSTATES = new Set(['40P01', '40001']);
/** How many times a transaction is run when it keeps losing conflicts. */
const CONFLICT_RUNS = 3;

/** True when `error` is a transaction rolled back by PostgreSQL for a conflict (safe to re-run). */
export function isConflict(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return error instanceof Error && typeof code === 'string' && CONFLICT_SQLSTATES.has(code);
}

/** True when `error` says the server is away rather than that the statement was wrong. */
export function isUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (UNAVAILABLE_SQLSTATES.test(code)) return true;
    if (/^E[A-Z]+$/.test(code)) return true; // ECONNREFUSED, ECONNRESET, EPIPE, ETIMEDOUT...
  }
  return UNAVAILABLE_MESSAGES.test(error.message);
}

export function storeUnavailable(
  cause: unknown,
  message = 'The PostgreSQL server does not answer.',
) {
  return new AcceptedError('STORE_UNAVAILABLE', message, {
    fix: 'Retry after the time in Retry-After; the server reconnects by itself once PostgreSQL is back.',
    cause,
  });
}

/**
 * A COMMIT was sent but its answer was lost with the connection: the transaction may or may
 * not have committed. Its writes must not be run again (they could apply twice).
 */
export class CommitOutcomeUnknown extends Error {
  override readonly name = 'CommitOutcomeUnknown';
}

/** A connection in a transaction (see `Db.begin`). */
export class Tx {
  constructor(
    private readonly client: pg.PoolClient,
    private readonly names: Map<string, string>,
  ) {}

  run<T>(text: string, params: readonly Param[], prepare: boolean): Promise<T[]> {
    return runOn<T>(this.client, this.names, text, params, prepare);
  }
}

async function runOn<T>(
  on: pg.Pool | pg.PoolClient | pg.Client,
  names: Map<string, string>,
  text: string,
  params: readonly Param[],
  prepare: boolean,
): Promise<T[]> {
  let name: string | undefined;
  if (prepare) {
    name = names.get(text);
    if (name === undefined) names.set(text, (name = `a${names.size + 1}`));
  }
  const result = await on.query<T & pg.QueryResultRow>({
    text,
    values: params as unknown[],
    ...(name === undefined ? {} : { name }),
  });
  return result.rows;
}

/** Longest wait to open one connection to the server (a black hole, a stalled proxy). */
export const CONNECT_TIMEOUT_MS = 5_000;
/** Longest wait for a connection of the pool when all are busy: then STORE_UNAVAILABLE. */
export const POOL_WAIT_TIMEOUT_MS = 30_000;

export interface DbOptions {
  url: string;
  max: number;
  schema: string;
  /** Dead idle connections and LISTEN reconnects are reported here (never thrown). */
  onError: (error: unknown, what: string) => void;
  /** Longest wait to open a connection (ms); CONNECT_TIMEOUT_MS when absent. */
  connectTimeoutMs?: number;
  /** Longest wait for a free connection of the pool (ms); POOL_WAIT_TIMEOUT_MS when absent. */
  poolWaitTimeoutMs?: number;
}

export interface Listening {
  unlisten(): Promise<void>;
}

/** The pool of one store instance. */
export class Db {
  private readonly pool: pg.Pool;
  /** One prepared-statement name per statement text (each connection prepares it once). */
  private readonly names = new Map<string, string>();
  private readonly config: pg.ClientConfig;

  constructor(private readonly options: DbOptions) {
    this.config = {
      connectionString: options.url,
      application_name: 'accepted',
      options: `-c search_path=${options.schema}`,
      // A server that accepts no connection (a black hole, an overloaded proxy) must not hang
      // every caller: opening a connection fails with STORE_UNAVAILABLE after this long.
      connectionTimeoutMillis: options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
      keepAlive: true,
      types: TYPES,
    };
    const connect = this.config;
    // pg-pool applies its connectionTimeoutMillis to the whole checkout, the wait for a busy
    // pool included: at 5 s a burst of reads (100,000 waits at once) failed while the server
    // was well. The pool's bound is the wait for a free connection; each new connection keeps
    // the bound of its own (5 s), given to the client that the pool creates.
    class Connection extends pg.Client {
      constructor() {
        super(connect);
      }
    }
    this.pool = new pg.Pool({
      ...this.config,
      Client: Connection,
      connectionTimeoutMillis: options.poolWaitTimeoutMs ?? POOL_WAIT_TIMEOUT_MS,
      max: options.max,
    });
    // An idle connection whose server went away emits an error; without this listener it
    // would be an uncaught exception. The pool drops the connection by itself.
    this.pool.on('error', (error) => options.onError(error, 'an idle connection failed'));
  }

  async run<T>(text: string, params: readonly Param[], prepare: boolean): Promise<T[]> {
    try {
      return await runOn<T>(this.pool, this.names, text, params, prepare);
    } catch (error) {
      if (isUnavailable(error)) throw storeUnavailable(error);
      throw error;
    }
  }

  /**
   * Runs `work` in one transaction on one connection. A failure of the server turns into
   * STORE_UNAVAILABLE; a COMMIT whose answer was lost into a STORE_UNAVAILABLE whose cause is
   * `CommitOutcomeUnknown`. A statement error rolls back and is rethrown as it is.
   */
  async begin<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    // A transaction PostgreSQL chose as a deadlock's victim, or aborted for a serialization
    // conflict, was rolled back whole: running it again is safe, and is how such a conflict is
    // resolved. `work` builds its writes from scratch on each run.
    for (let run = 1; ; run++) {
      try {
        return await this.beginOnce(work);
      } catch (error) {
        if (run >= CONFLICT_RUNS || !isConflict(error)) throw error;
      }
    }
  }

  private async beginOnce<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      throw isUnavailable(error) ? storeUnavailable(error) : error;
    }
    let dead: Error | undefined;
    // A connection lost while checked out emits 'error' on the client: without a listener it
    // would be an uncaught exception. The query in flight rejects as well; keep the cause.
    const onLost = (error: Error) => {
      dead ??= error;
    };
    client.on('error', onLost);
    try {
      await client.query('BEGIN');
      const result = await work(new Tx(client, this.names));
      try {
        await client.query('COMMIT');
      } catch (error) {
        if (isUnavailable(error)) {
          dead = error as Error;
          throw storeUnavailable(
            new CommitOutcomeUnknown('The connection was lost during COMMIT.', { cause: error }),
            'The PostgreSQL server went away while a write was committed; it may or may not have been applied.',
          );
        }
        throw error;
      }
      return result;
    } catch (error) {
      if (dead === undefined && isUnavailable(error)) dead = error as Error;
      if (dead === undefined) {
        try {
          await client.query('ROLLBACK');
        } catch (rollback) {
          dead = rollback as Error;
        }
      }
      if (dead !== undefined && !(error instanceof AcceptedError)) throw storeUnavailable(error);
      throw error;
    } finally {
      client.off('error', onLost);
      // A connection that failed is destroyed, not given back to the pool.
      client.release(dead);
    }
  }

  /**
   * LISTEN on `channel` on a connection of its own. When that connection drops it reconnects
   * (backing off to 5 s) and calls `onListen` again: notifications sent meanwhile are lost, so
   * the caller looks for itself.
   */
  async listen(
    channel: string,
    onNotify: (payload: string) => void,
    onListen: () => void,
  ): Promise<Listening> {
    let stopped = false;
    let current: pg.Client | null = null;
    let timer: NodeJS.Timeout | null = null;
    let delay = 100;
    const connect = async (): Promise<void> => {
      const client = new pg.Client(this.config);
      client.on('error', (error) => this.options.onError(error, 'the LISTEN connection failed'));
      client.on('notification', (message) => {
        if (message.channel === channel && message.payload !== undefined) onNotify(message.payload);
      });
      try {
        await client.connect();
        await client.query(`LISTEN "${channel}"`);
      } catch (error) {
        await client.end().catch(() => undefined);
        throw error;
      }
      if (stopped) {
        await client.end().catch(() => undefined);
        return;
      }
      client.on('end', () => {
        if (current !== client) return;
        current = null;
        if (!stopped) retry();
      });
      current = client;
      delay = 100;
      onListen();
    };
    const retry = () => {
      timer = setTimeout(() => {
        timer = null;
        connect().catch((error: unknown) => {
          this.options.onError(error, 'LISTEN could not reconnect; retrying');
          delay = Math.min(delay * 2, 5_000);
          if (!stopped) retry();
        });
      }, delay);
      timer.unref();
    };
    try {
      await connect();
    } catch (error) {
      throw isUnavailable(error) ? storeUnavailable(error) : error;
    }
    return {
      unlisten: async () => {
        stopped = true;
        if (timer) clearTimeout(timer);
        const client = current;
        current = null;
        await client?.end().catch(() => undefined);
      },
    };
  }

  async end(): Promise<void> {
    await this.pool.end();
  }
}

/** Runs one statement, prepared once per connection by its text. */
export function query<T>(db: Db | Tx, text: string, params: readonly Param[] = []): Promise<T[]> {
  return db.run<T>(text, params, true);
}

/** Runs SQL text as it is (several statements allowed, no parameters): migrations. */
export function exec(db: Db | Tx, text: string): Promise<unknown[]> {
  return db.run(text, [], false);
}
