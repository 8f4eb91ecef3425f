export { createHttpServer, noneMatch, type HttpOptions } from './server.ts';
export { toMonitor, toWireEvent, type StatusMonitor, type WireEvent } from './monitor.ts';
export { toProblem, PROBLEM_CONTENT_TYPE, type Problem } from './problem.ts';
export { ApiKeys, generateApiKey, type ApiKeyOwner } from './auth.ts';
export { openApiDocument, type OpenApiOptions } from './openapi.ts';
export { asyncApiDocument } from './asyncapi.ts';
export type { StreamOptions, HubStats } from '../stream/hub.ts';
