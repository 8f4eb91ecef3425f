import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { FastifyRequest } from 'fastify';
import { AcceptedError } from '../domain/errors.ts';

/** Tenant names: what keys map to, and what every read and write is scoped by. */
export const TENANT_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Keys shorter than this are refused: they could be guessed. */
export const MIN_KEY_LENGTH = 20;

export interface ApiKeyOwner {
  tenant: string;
  /** A label for logs ("ci", "billing-service"); never the key. */
  name: string;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function configError(message: string, fix: string): AcceptedError {
  return new AcceptedError('VALIDATION_FAILED', message, { fix });
}

/**
 * API keys mapped to tenants. Only SHA-256 digests are kept in memory, so a key file may
 * hold digests instead of keys (`accepted keygen` prints both).
 */
export class ApiKeys {
  private readonly byDigest = new Map<string, ApiKeyOwner>();

  get size(): number {
    return this.byDigest.size;
  }

  /** Adds a key (or its hex SHA-256 digest). Throws on a weak key or a bad tenant. */
  add(entry: { tenant: string; key?: string; sha256?: string; name?: string }): void {
    if (typeof entry.tenant !== 'string' || !TENANT_PATTERN.test(entry.tenant)) {
      throw configError(
        `API key tenant ${JSON.stringify(entry.tenant)} is not a valid tenant name.`,
        'Use 1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit.',
      );
    }
    let digest: string;
    if (typeof entry.key === 'string') {
      if (entry.key.length < MIN_KEY_LENGTH || /\s/.test(entry.key)) {
        throw configError(
          `An API key of tenant ${entry.tenant} is too short or contains spaces.`,
          `Use at least ${MIN_KEY_LENGTH} random characters; \`accepted keygen\` makes one.`,
        );
      }
      digest = sha256(entry.key);
    } else if (typeof entry.sha256 === 'string' && /^[0-9a-f]{64}$/i.test(entry.sha256)) {
      digest = entry.sha256.toLowerCase();
    } else {
      throw configError(
        `An API key entry of tenant ${entry.tenant} has neither "key" nor a hex "sha256".`,
        'Give each entry {"tenant": "...", "key": "..."} or {"tenant": "...", "sha256": "<64 hex>"}.',
      );
    }
    if (this.byDigest.has(digest)) {
      throw configError('The same API key is configured twice.', 'Give every client its own key.');
    }
    this.byDigest.set(digest, { tenant: entry.tenant, name: entry.name ?? entry.tenant });
  }

  /** Who holds this key, or null. */
  lookup(key: string): ApiKeyOwner | null {
    return this.byDigest.get(sha256(key)) ?? null;
  }

  /** `tenant:key` pairs separated by commas (the `ACCEPTED_API_KEYS` variable). */
  addFromList(list: string): void {
    for (const pair of list.split(',')) {
      const trimmed = pair.trim();
      if (trimmed === '') continue;
      const colon = trimmed.indexOf(':');
      if (colon <= 0) {
        throw configError(
          'ACCEPTED_API_KEYS must be a comma-separated list of tenant:key pairs.',
          'For example ACCEPTED_API_KEYS=acme:<key>,beta:<key>.',
        );
      }
      this.add({ tenant: trimmed.slice(0, colon), key: trimmed.slice(colon + 1) });
    }
  }

  /** A JSON file: `{"keys": [{"tenant": "acme", "key": "..." | "sha256": "...", "name"?: "..."}]}`. */
  addFromFile(file: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (error) {
      throw configError(
        `Cannot read the API key file ${file}: ${error instanceof Error ? error.message : String(error)}.`,
        'Check the path and that the file is JSON like {"keys": [{"tenant": "acme", "key": "..."}]}.',
      );
    }
    const keys = (parsed as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys)) {
      throw configError(
        `The API key file ${file} has no "keys" array.`,
        'Write {"keys": [{"tenant": "acme", "key": "..."}]}.',
      );
    }
    for (const entry of keys as { tenant: string; key?: string; sha256?: string }[]) {
      this.add(entry);
    }
  }
}

/** A new random API key and its digest (what `accepted keygen` prints). */
export function generateApiKey(): { key: string; sha256: string } {
  const key = `acc_${randomBytes(32).toString('base64url')}`;
  return { key, sha256: sha256(key) };
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string | undefined): string | null {
  if (header === undefined) return null;
  const match = /^Bearer[ ]+([^\s]+)\s*$/i.exec(header);
  return match?.[1] ?? null;
}

/** What an `authenticate` hook is told about the request it decides on. */
export interface AuthenticateContext {
  /** `http` for a request, `websocket` for the upgrade of `GET /v1/ws` (before the handshake). */
  kind: 'http' | 'websocket';
  /** The route's path inside the mount (such as `/v1/operations/op_...`), without the prefix. */
  path: string;
  /**
   * The Fastify request when `acceptedPlugin` serves it, with whatever the host's own hooks
   * set on it (`request.user`, ...); null on a WebSocket upgrade and under
   * `createAcceptedHandler` (there, the first argument is Express's `req`).
   */
  request: FastifyRequest | null;
}

/** Who the host application says is calling: the tenant the request acts for. */
export interface AuthenticatedCaller {
  /** A tenant name (TENANT_PATTERN: 1 to 64 letters, digits, `.`, `_` or `-`). */
  tenant: string;
}

/**
 * The host application's own authentication: `{ tenant }` for a caller it knows, null (or
 * undefined) for one it does not (answered `401 UNAUTHENTICATED`). It may throw an
 * `AcceptedError` (such as `FORBIDDEN`) to answer that instead; any other error answers 500.
 * `req` is the Node request: Express's `req` under `createAcceptedHandler`, the upgrade request
 * on a WebSocket upgrade.
 */
export type AuthenticateHook = (
  req: IncomingMessage,
  context: AuthenticateContext,
) => AuthenticatedCaller | null | undefined | Promise<AuthenticatedCaller | null | undefined>;
