// `@accepted/server/server`: a whole server (store, engine, webhooks, HTTP API and streams)
// from one configuration, as `accepted serve` runs it.
export { createServer, storeFor, type AcceptedServer, type CreateServerOptions } from './server.ts';
export {
  NUMERIC_OPTIONS,
  SERVE_USAGE,
  isLoopback,
  resolveServerConfig,
  type ResolveInput,
  type ServerConfig,
  type ServerOptions,
} from './config.ts';
export { ConfigError, isConfigError, parseDuration, parseSize } from '../domain/options.ts';
