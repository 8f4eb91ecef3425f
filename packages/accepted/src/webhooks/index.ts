// `@accepted/server/webhooks`: webhook delivery for an Accepted instance, and the receiver's
// check.
export { createWebhooks, Webhooks, type EndpointInput, type WebhookOptions } from './service.ts';
export { AddressPolicy, checkWebhookUrl } from './ssrf.ts';
export {
  generateSigningKeyPair,
  generateWebhookSecret,
  signatureHeader,
  verifyWebhook,
  webhookHeaders,
  WebhookSigner,
  WebhookVerificationError,
} from './signature.ts';
export { DEFAULT_RETRY_SCHEDULE, parseDurations } from '../domain/webhooks.ts';
