export { SqliteStore, sqliteStore, type SqliteStoreOptions } from './sqlite-store.ts';
