export { createHttpServer, noneMatch, type HttpOptions } from './server.ts';
export { toMonitor, toWireEvent, type StatusMonitor, type WireEvent } from './monitor.ts';
export { toProblem, PROBLEM_CONTENT_TYPE, type Problem } from './problem.ts';
