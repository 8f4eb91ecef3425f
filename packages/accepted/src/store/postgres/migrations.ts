import {
  EVENT_TOMBSTONES_INDEX,
  WEBHOOK_DELIVERY_INDEXES,
  WEBHOOK_DELIVERY_LIST_INDEXES,
} from '../ddl.ts';
/**
 * Numbered, append-only migrations of the PostgreSQL adapter. Never edit a released entry: add
 * a new one. The `migrations` table of the schema records those applied; `migrate` (in
 * postgres-store.ts) applies the rest in one transaction under an advisory lock, so that nodes
 * starting together apply each migration once.
 *
 * Conventions: times are epoch milliseconds (`bigint`), JSON the adapter hands back unchanged
 * (inputs, results, event data, payloads) is `text` (exact bytes, no parse in the database),
 * labels are `jsonb` so that filters use containment (`@>`).
 */
export const MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'operations, events, idempotency keys, webhooks',
    sql: `
      CREATE TABLE operations (
        pk bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        id text PRIMARY KEY,
        tenant text NOT NULL,
        type text NOT NULL,
        status text NOT NULL,
        input text NOT NULL,
        progress text,
        result text,
        error text,
        attempts integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL,
        run_at bigint NOT NULL,
        timeout_ms bigint,
        labels jsonb NOT NULL,
        callback_url text,
        traceparent text,
        cancel_requested_at bigint,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        started_at bigint,
        finished_at bigint,
        version integer NOT NULL,
        lease_token text,
        lease_owner text,
        lease_expires_at bigint
      ) WITH (fillfactor = 80);
      CREATE INDEX operations_claim ON operations (run_at) WHERE status = 'queued';
      CREATE INDEX operations_leases ON operations (lease_expires_at) WHERE status = 'running';
      CREATE INDEX operations_tenant ON operations (tenant, pk);
      CREATE INDEX operations_finished ON operations (finished_at) WHERE finished_at IS NOT NULL;

      -- The log. seq is allocated from meta.seq_high at the end of each writing transaction
      -- (see docs/architecture.md): commit order is seq order.
      CREATE TABLE events (
        seq bigint PRIMARY KEY,
        operation_id text NOT NULL,
        tenant text NOT NULL,
        operation_type text NOT NULL,
        version integer NOT NULL,
        type text NOT NULL,
        data text NOT NULL,
        time bigint NOT NULL,
        labels jsonb
      );
      CREATE INDEX events_operation ON events (operation_id, seq);
      ${EVENT_TOMBSTONES_INDEX}

      -- seq_high: the highest seq ever allocated (never reused); webhook_cursor: the last
      -- event turned into deliveries.
      CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);
      INSERT INTO meta (key, value) VALUES ('seq_high', 0), ('webhook_cursor', 0);

      CREATE TABLE idempotency_keys (
        tenant text NOT NULL,
        key text NOT NULL,
        fingerprint text NOT NULL,
        operation_id text NOT NULL,
        status integer,
        hold_until bigint,
        created_at bigint NOT NULL,
        expires_at bigint NOT NULL,
        PRIMARY KEY (tenant, key)
      );
      CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
      CREATE INDEX idempotency_keys_operation ON idempotency_keys (operation_id);

      CREATE TABLE webhook_endpoints (
        pk bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        id text PRIMARY KEY,
        tenant text NOT NULL,
        url text NOT NULL,
        description text,
        event_types text,
        labels text,
        secrets text NOT NULL,
        signing_key text,
        retry_schedule text,
        rate_limit integer,
        enabled boolean NOT NULL,
        disabled_reason text,
        disabled_at bigint,
        failing_since bigint,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        version integer NOT NULL
      );
      CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant, pk);

      CREATE TABLE callback_secrets (
        tenant text PRIMARY KEY,
        secrets text NOT NULL,
        updated_at bigint NOT NULL
      );

      CREATE TABLE webhook_deliveries (
        pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        tenant text NOT NULL,
        target text NOT NULL,
        url text NOT NULL,
        operation_id text NOT NULL,
        event_seq bigint NOT NULL,
        event_type text NOT NULL,
        payload text NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        round_start integer NOT NULL DEFAULT 0,
        next_attempt_at bigint,
        lease_until bigint,
        last_status integer,
        last_error text,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        delivered_at bigint
      );
      ${WEBHOOK_DELIVERY_INDEXES}

      CREATE TABLE webhook_attempts (
        delivery_pk bigint NOT NULL,
        attempt integer NOT NULL,
        started_at bigint NOT NULL,
        duration_ms bigint NOT NULL,
        status integer,
        error text,
        response_body text NOT NULL,
        PRIMARY KEY (delivery_pk, attempt)
      );
    `,
  },
  {
    version: 2,
    name: 'webhook lease tokens, rate windows',
    sql: `
      -- The token of the claim a delivery is leased to: a record applies only under it.
      -- replayed_at: replayed while an attempt was in flight (takes effect when it ends).
      ALTER TABLE webhook_deliveries ADD COLUMN lease_token text, ADD COLUMN replayed_at bigint;
      -- Each rate-limited endpoint's current window (an epoch second) and its claims in it,
      -- updated by the claim under the endpoint's row lock: the limit holds across nodes.
      ALTER TABLE webhook_endpoints ADD COLUMN rate_window bigint,
        ADD COLUMN rate_count integer NOT NULL DEFAULT 0;

      -- Repairs. Deliveries of deleted endpoints that a late record made pending again fail,
      -- as the deletion said.
      UPDATE webhook_deliveries d SET status = 'failed', last_error = 'ENDPOINT_DELETED',
        next_attempt_at = NULL, lease_until = NULL
        WHERE status = 'pending' AND target <> 'callback'
          AND NOT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = d.target);
      -- Next attempts past the range of a date come due in 24 hours.
      UPDATE webhook_deliveries
        SET next_attempt_at = (extract(epoch FROM now()) * 1000)::bigint + 86400000
        WHERE next_attempt_at > 8640000000000000;
      -- Endpoint delays past 24 hours (the bound now) become 24 hours.
      UPDATE webhook_endpoints SET retry_schedule = (
          SELECT jsonb_agg(least(greatest(v::numeric, 0), 86400000)::bigint ORDER BY i)
          FROM jsonb_array_elements_text(retry_schedule::jsonb) WITH ORDINALITY AS t(v, i))::text
        WHERE retry_schedule IS NOT NULL AND EXISTS (
          SELECT 1 FROM jsonb_array_elements_text(retry_schedule::jsonb) AS x(v)
          WHERE v::numeric > 86400000);
    `,
  },
  {
    version: 3,
    name: 'consumers (the relay cursor)',
    sql: `
      -- Named consumers of the log: the committed position (every event up to it delivered)
      -- and the lease of the one holder that may move it, locked by its writes (FOR UPDATE).
      CREATE TABLE consumers (
        name text PRIMARY KEY,
        position bigint NOT NULL,
        holder text,
        token text,
        lease_until bigint,
        lease_ms bigint NOT NULL,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL
      );
      -- The webhook dispatcher's cursor becomes its consumer. The old row stays at the largest
      -- seq, so that a node of an earlier version still running during a rolling upgrade finds
      -- nothing after it and dispatches nothing (neither twice nor from the start).
      INSERT INTO consumers (name, position, lease_ms, created_at, updated_at)
        SELECT 'webhooks', value, 0, (extract(epoch FROM now()) * 1000)::bigint,
          (extract(epoch FROM now()) * 1000)::bigint
        FROM meta WHERE key = 'webhook_cursor';
      UPDATE meta SET value = 9007199254740991 WHERE key = 'webhook_cursor';
    `,
  },
  {
    version: 4,
    name: 'indexes that page deliveries',
    sql: `
      ${WEBHOOK_DELIVERY_LIST_INDEXES}
    `,
  },
];
