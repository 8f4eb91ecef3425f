// `accepted serve`'s command line: the server's one resolver (server/config.ts) fed with the
// flags and the environment; a wrong setting is a usage error (exit 2) that names the flag.
import { isConfigError } from '../domain/options.ts';
import { resolveServerConfig, type ServerConfig } from '../server/config.ts';

export { SERVE_USAGE } from '../server/config.ts';

export type ServeConfig = ServerConfig;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Runs a command-line parse, reporting a bad command line as a UsageError (exit 2). */
export function asUsage<R>(parse: () => R): R {
  try {
    return parse();
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

export function resolveServeConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): ServeConfig {
  try {
    return resolveServerConfig({ argv, env });
  } catch (error) {
    if (isConfigError(error)) throw new UsageError(error.message);
    throw error;
  }
}
