export { createHttpServer, noneMatch, type HttpOptions } from '../server/http.ts';
export {
  acceptedPlugin,
  createAcceptedHandler,
  type AcceptedHandler,
  type AcceptedHandlerOptions,
  type AcceptedPluginOptions,
} from '../server/embed.ts';
export type { AcceptedHttpOptions } from '../server/app.ts';
export { toMonitor, toWireEvent, type StatusMonitor, type WireEvent } from '../wire/monitor.ts';
export { toProblem, PROBLEM_CONTENT_TYPE, type Problem } from '../wire/problem.ts';
export {
  ApiKeys,
  generateApiKey,
  TENANT_PATTERN,
  type ApiKeyOwner,
  type AuthenticateContext,
  type AuthenticateHook,
  type AuthenticatedCaller,
} from './auth.ts';
export { openApiDocument, type OpenApiOptions } from './openapi.ts';
export { asyncApiDocument } from './asyncapi.ts';
export type { StreamOptions, HubStats } from '../stream/hub.ts';
