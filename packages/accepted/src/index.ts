// The public library API of `@accepted/server`. Adapters live at their own subpaths
// (`@accepted/server/sqlite`, `@accepted/server/http`) so that an application imports only the
// ones it uses.
export {
  createAccepted,
  DEFAULT_TENANT,
  type Accepted,
  type AcceptedOptions,
  type Conditional,
  type EventPageOptions,
  type EventSelection,
  type EventsOptions,
  type IdempotentSubmit,
  type IdempotentSubmitOptions,
  type ListOptions,
  type Scope,
  type StopOptions,
  type SubmitOptions,
  type WaitOptions,
} from './engine/accepted.ts';
export {
  defineOperation,
  type Backoff,
  type HandlerContext,
  type JsonSchema,
  type Logger,
  type OperationDefinition,
  type OperationTypes,
} from './engine/definition.ts';
export { SUBMIT_REQUEST_SCHEMA, type SubmitRequest } from './wire/submit.ts';
export {
  AcceptedError,
  ERROR_CODES,
  PermanentError,
  RetryAfterError,
  isAcceptedError,
  type ErrorCode,
  type FieldProblem,
} from './domain/errors.ts';
export {
  EVENT_TYPES,
  TERMINAL_EVENT_TYPES,
  type EventData,
  type EventType,
  type OperationEvent,
} from './domain/events.ts';
export {
  TERMINAL_STATUSES,
  isTerminal,
  type Json,
  type Operation,
  type OperationError,
  type OperationStatus,
  type Progress,
} from './domain/operation.ts';
export {
  generateSigningKeyPair,
  generateWebhookSecret,
  verifyWebhook,
  WebhookVerificationError,
  type VerifyWebhookOptions,
  type WebhookPayload,
  type WebhookVerificationReason,
} from './webhooks/signature.ts';
export type {
  ClaimRequest,
  ClaimResult,
  ClaimedOperation,
  CreateOnceResult,
  EventQuery,
  IdempotencyClaim,
  LeaseRef,
  LeaseState,
  ListQuery,
  Page,
  RenewRequest,
  Store,
  StoreHint,
  WebhookStore,
} from './store/store.ts';
export type {
  AcquireRequest,
  ConsumerLease,
  ConsumerRef,
  ConsumerState,
  ConsumerStore,
} from './store/consumers.ts';
