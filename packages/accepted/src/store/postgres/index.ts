export { PostgresStore, postgresStore, type PostgresStoreOptions } from './postgres-store.ts';
