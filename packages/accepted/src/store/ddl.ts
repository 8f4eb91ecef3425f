// Statements of the schema that both dialects write alike: written once, placed in each
// store's migrations. (The SQL each produces is what those migrations have always run.)

/** The indexes of `webhook_deliveries` (migration "webhooks" of both stores). */
export const WEBHOOK_DELIVERY_INDEXES = `CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
        WHERE status = 'pending';
      -- The line of one operation's deliveries to one target, in event order.
      CREATE INDEX webhook_deliveries_line ON webhook_deliveries (target, operation_id, event_seq)
        WHERE status = 'pending';
      CREATE INDEX webhook_deliveries_target ON webhook_deliveries (tenant, target, pk);
      CREATE INDEX webhook_deliveries_operation ON webhook_deliveries (operation_id, pk);
      CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at)
        WHERE status <> 'pending';`;

/**
 * The indexes that page a tenant's deliveries newest first (`listDeliveries`), with and
 * without a status filter: without them each page read and sorted every delivery the tenant
 * had (a later migration of both stores).
 */
export const WEBHOOK_DELIVERY_LIST_INDEXES = `CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant, pk);
      CREATE INDEX webhook_deliveries_status ON webhook_deliveries (tenant, status, pk);`;

/**
 * The events that outlive their operation (deletion markers, disabled endpoints), by time, for
 * retention: without it each purge scanned the whole log (PostgreSQL's first migration has it;
 * SQLite's migration 8).
 */
export const EVENT_TOMBSTONES_INDEX = `CREATE INDEX events_tombstones ON events (time)
        WHERE type IN ('operation.deleted', 'endpoint.disabled');`;
