// `@accepted/client`: submit operations to an Accepted server and await their outcome, in
// browsers and Node.js 20+. No dependencies; webhooks are checked with
// `@accepted/client/webhooks` (Node.js only).
export {
  createClient,
  type CallOptions,
  type Client,
  type ClientOptions,
  type EventsOptions,
  type ListOptions,
  type MapOptions,
  type OperationHandle,
  type RetryOptions,
  type SubmitOptions,
  type Via,
  type WaitOptions,
} from './client.ts';
export {
  AbortError,
  AcceptedClientError,
  NetworkError,
  OperationFailedError,
  ProblemError,
  TimeoutError,
} from './errors.ts';
export type {
  Operation,
  OperationError,
  OperationEvent,
  OperationMap,
  OperationPage,
  OperationStatus,
  Problem,
  Progress,
  SnapshotEvent,
  StreamEvent,
  StreamToken,
  WebSocketConstructor,
  WebSocketHandler,
  WebSocketLike,
} from './types.ts';
