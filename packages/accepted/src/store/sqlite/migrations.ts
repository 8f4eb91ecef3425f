import {
  EVENT_TOMBSTONES_INDEX,
  WEBHOOK_DELIVERY_INDEXES,
  WEBHOOK_DELIVERY_LIST_INDEXES,
} from '../ddl.ts';
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
  {
    version: 4,
    name: 'webhooks',
    sql: `
      CREATE TABLE webhook_endpoints (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        url TEXT NOT NULL,
        description TEXT,
        event_types TEXT,
        labels TEXT,
        secrets TEXT NOT NULL,
        signing_key TEXT,
        retry_schedule TEXT,
        rate_limit INTEGER,
        enabled INTEGER NOT NULL,
        disabled_reason TEXT,
        disabled_at INTEGER,
        failing_since INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        version INTEGER NOT NULL
      );
      CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant, pk);

      -- Per tenant: the secrets that sign deliveries to operations' callbackUrl.
      CREATE TABLE callback_secrets (
        tenant TEXT PRIMARY KEY,
        secrets TEXT NOT NULL,
        updated_at INTEGER NOT NULL
      ) WITHOUT ROWID;

      CREATE TABLE webhook_deliveries (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        target TEXT NOT NULL,
        url TEXT NOT NULL,
        operation_id TEXT NOT NULL,
        event_seq INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        -- attempts made before the last replay: the retry schedule restarts there.
        round_start INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        lease_until INTEGER,
        last_status INTEGER,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        delivered_at INTEGER
      );
      ${WEBHOOK_DELIVERY_INDEXES}

      CREATE TABLE webhook_attempts (
        delivery_pk INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status INTEGER,
        error TEXT,
        response_body TEXT NOT NULL,
        PRIMARY KEY (delivery_pk, attempt)
      ) WITHOUT ROWID;

      -- The dispatcher starts at the end of the log: history is not sent again on upgrade.
      INSERT INTO meta (key, value) SELECT 'webhook_cursor',
        max(value, (SELECT coalesce(max(seq), 0) FROM events)) FROM meta WHERE key = 'seq_high';
    `,
  },
  {
    version: 5,
    name: 'webhook lease tokens, rate windows',
    sql: `
      -- The token of the claim a delivery is leased to: a record applies only under it.
      ALTER TABLE webhook_deliveries ADD COLUMN lease_token TEXT;
      -- Replayed while an attempt was in flight: the replay takes effect when it ends.
      ALTER TABLE webhook_deliveries ADD COLUMN replayed_at INTEGER;
      -- Each rate-limited endpoint's current window (an epoch second) and its claims in it.
      ALTER TABLE webhook_endpoints ADD COLUMN rate_window INTEGER;
      ALTER TABLE webhook_endpoints ADD COLUMN rate_count INTEGER NOT NULL DEFAULT 0;

      -- Repairs. Deliveries of deleted endpoints that a late record made pending again fail,
      -- as the deletion said.
      UPDATE webhook_deliveries SET status = 'failed', last_error = 'ENDPOINT_DELETED',
        next_attempt_at = NULL, lease_until = NULL
        WHERE status = 'pending' AND target <> 'callback'
          AND target NOT IN (SELECT id FROM webhook_endpoints);
      -- Next attempts past the range of a date come due in 24 hours.
      UPDATE webhook_deliveries
        SET next_attempt_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 86400000
        WHERE next_attempt_at > 8640000000000000;
      -- Endpoint delays past 24 hours (the bound now) become 24 hours.
      UPDATE webhook_endpoints SET retry_schedule = (
          SELECT json_group_array(min(max(CAST(value AS INTEGER), 0), 86400000) ORDER BY key)
          FROM json_each(webhook_endpoints.retry_schedule))
        WHERE retry_schedule IS NOT NULL AND EXISTS (
          SELECT 1 FROM json_each(webhook_endpoints.retry_schedule) WHERE value > 86400000);
    `,
  },
  {
    version: 6,
    name: 'consumers (the relay cursor)',
    sql: `
      -- Named consumers of the log: the committed position (every event up to it delivered)
      -- and the lease of the one holder that may move it (consumer-rules.ts).
      CREATE TABLE consumers (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        holder TEXT,
        token TEXT,
        lease_until INTEGER,
        lease_ms INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) WITHOUT ROWID;
      -- The webhook dispatcher's cursor becomes its consumer.
      INSERT INTO consumers (name, position, lease_ms, created_at, updated_at)
        SELECT 'webhooks', value, 0, CAST(strftime('%s', 'now') AS INTEGER) * 1000,
          CAST(strftime('%s', 'now') AS INTEGER) * 1000
        FROM meta WHERE key = 'webhook_cursor';
      DELETE FROM meta WHERE key = 'webhook_cursor';
    `,
  },
  {
    version: 7,
    name: 'indexes that page deliveries',
    sql: `
      ${WEBHOOK_DELIVERY_LIST_INDEXES}
    `,
  },
  {
    version: 8,
    name: 'the events that outlive their operation, by time',
    sql: `
      ${EVENT_TOMBSTONES_INDEX}
    `,
  },
];
