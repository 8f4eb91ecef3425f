/**
 * Numbered, append-only migrations. Never edit a released entry: add a new one.
 * `user_version` records the last one applied.
 */
export const MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'operations and events',
    sql: `
      CREATE TABLE operations (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT NOT NULL,
        progress TEXT,
        result TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        run_at INTEGER NOT NULL,
        timeout_ms INTEGER,
        labels TEXT NOT NULL,
        callback_url TEXT,
        traceparent TEXT,
        cancel_requested_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        version INTEGER NOT NULL,
        lease_token TEXT,
        lease_owner TEXT,
        lease_expires_at INTEGER
      );
      CREATE INDEX operations_claim ON operations (run_at) WHERE status = 'queued';
      CREATE INDEX operations_leases ON operations (lease_expires_at) WHERE status = 'running';
      CREATE INDEX operations_tenant ON operations (tenant);
      CREATE INDEX operations_finished ON operations (finished_at) WHERE finished_at IS NOT NULL;

      CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        operation_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        operation_type TEXT NOT NULL,
        version INTEGER NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        time INTEGER NOT NULL
      );
      CREATE INDEX events_operation ON events (operation_id, seq);

      -- The highest seq ever written, so that a seq is never reused once its event is purged.
      CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      INSERT INTO meta (key, value) VALUES ('seq_high', 0);
    `,
  },
  {
    version: 2,
    name: 'idempotency keys',
    sql: `
      -- One row per (tenant, key): the request's fingerprint, the operation it created and the
      -- status of the original response (NULL while that request is still answering).
      CREATE TABLE idempotency_keys (
        tenant TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        operation_id TEXT NOT NULL,
        status INTEGER,
        hold_until INTEGER,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, key)
      ) WITHOUT ROWID;
      CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
      CREATE INDEX idempotency_keys_operation ON idempotency_keys (operation_id);
    `,
  },
  {
    version: 3,
    name: 'labels on events',
    sql: `
      -- The operation's labels on each of its events (NULL when it has none), so that streams
      -- filter the log by label without a join.
      ALTER TABLE events ADD COLUMN labels TEXT;
      UPDATE events SET labels = (SELECT o.labels FROM operations o WHERE o.id = events.operation_id)
        WHERE operation_id IN (SELECT id FROM operations WHERE labels <> '{}');
    `,
  },
];
