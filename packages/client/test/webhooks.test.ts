// `@accepted/client/webhooks`: the receiver's check, for receivers that install only the
// client. The full suite is packages/accepted/test/signature.test.ts (the same code).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  WebhookKeyError,
  WebhookVerificationError,
  verifyWebhook,
} from '@accepted/client/webhooks';
import * as accepted from '../../accepted/src/index.ts';
import {
  generateSigningKeyPair,
  generateWebhookSecret,
  webhookHeaders,
} from '../../accepted/src/webhooks/signature.ts';

/** The test vector published with Standard Webhooks 1.0. */
const VECTOR = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  headers: {
    'webhook-id': 'msg_p5jXN8AQM9LWM0D4loKWxJek',
    'webhook-timestamp': '1614265330',
    'webhook-signature': 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
  },
  body: '{"test": 2432232314}',
  now: 1614265330 * 1000,
};

describe('verifyWebhook from @accepted/client/webhooks', () => {
  it('verifies the published test vector, and rejects a changed body', () => {
    assert.throws(
      () => verifyWebhook(VECTOR.secret, VECTOR.headers, VECTOR.body, { now: VECTOR.now }),
      (error: unknown) =>
        error instanceof WebhookVerificationError && error.reason === 'invalid_payload',
      'the vector is signed correctly; its body is not an Accepted payload',
    );
    assert.throws(
      () => verifyWebhook(VECTOR.secret, VECTOR.headers, '{"test":1}', { now: VECTOR.now }),
      (error: unknown) =>
        error instanceof WebhookVerificationError && error.reason === 'no_matching_signature',
    );
  });

  it('verifies what the server signs, with HMAC and ed25519 keys', () => {
    const secret = generateWebhookSecret();
    const { secretKey, publicKey } = generateSigningKeyPair();
    const body = JSON.stringify({ type: 'operation.succeeded', timestamp: 'now', data: 1 });
    const timestamp = 1_700_000_000;
    const headers = webhookHeaders({ id: 'evt_1', timestamp, body, secrets: [secret, secretKey] });
    for (const key of [secret, publicKey]) {
      assert.deepEqual(verifyWebhook(key, headers, body, { now: timestamp * 1000 }), {
        type: 'operation.succeeded',
        timestamp: 'now',
        data: 1,
      });
    }
    // `@accepted/server` re-exports the same error class.
    assert.equal(accepted.WebhookVerificationError, WebhookVerificationError);
  });

  it('throws WebhookKeyError for a secret it cannot use (a configuration mistake)', () => {
    for (const bad of [[], ['whsec_not base64!'], ['whsk_AAAA']]) {
      assert.throws(
        () => verifyWebhook(bad, VECTOR.headers, VECTOR.body, { now: VECTOR.now }),
        (error: unknown) => error instanceof WebhookKeyError && error.code === 'VALIDATION_FAILED',
      );
    }
  });
});
