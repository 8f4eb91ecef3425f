import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { describe, it } from 'node:test';
import { AcceptedError } from '../src/domain/errors.ts';
import {
  WebhookSigner,
  WebhookVerificationError,
  generateSigningKeyPair,
  generateWebhookSecret,
  signatureHeader,
  verifyWebhook,
  webhookHeaders,
  type WebhookVerificationReason,
} from '../src/webhooks/signature.ts';

/** The test vector published with Standard Webhooks 1.0. */
const VECTOR = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
};

const NOW_S = 1_700_000_000;
const NOW_MS = NOW_S * 1000;
const BODY = JSON.stringify({
  type: 'operation.succeeded',
  timestamp: '2023-11-14T22:13:20.000Z',
  data: { id: 'op_1', status: 'succeeded' },
});

/**
 * A receiver written from the text of the spec alone, sharing no code with signature.ts:
 * split `webhook-signature` on spaces, keep the `v1,` entries, HMAC-SHA256 the string
 * `${id}.${timestamp}.${body}` with the base64-decoded part of the `whsec_` secret, compare in
 * constant time, and refuse timestamps more than 5 minutes away.
 */
function specVerify(secret: string, headers: Record<string, string>, body: string, nowS: number) {
  const id = headers['webhook-id'];
  const timestamp = headers['webhook-timestamp'];
  const signatures = headers['webhook-signature'];
  if (id === undefined || timestamp === undefined || signatures === undefined) return false;
  if (Math.abs(nowS - Number(timestamp)) > 5 * 60) return false;
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest();
  return signatures.split(' ').some((entry) => {
    const [version, encoded] = entry.split(',');
    if (version !== 'v1' || encoded === undefined) return false;
    const given = Buffer.from(encoded, 'base64');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

function headersFor(secrets: readonly string[], timestamp = NOW_S, body = BODY, id = 'msg_1') {
  return webhookHeaders({ id, timestamp, body, secrets });
}

function rejects(reason: WebhookVerificationReason, verify: () => unknown): void {
  assert.throws(verify, (error: unknown) => {
    assert.ok(error instanceof WebhookVerificationError);
    assert.equal(error.name, 'WebhookVerificationError');
    assert.equal(error.reason, reason);
    return true;
  });
}

describe('Standard Webhooks test vector', () => {
  it('signs to the published signature', () => {
    const { secret, id, timestamp, body, signature } = VECTOR;
    assert.equal(signatureHeader({ id, timestamp, body, secrets: [secret] }), signature);
    assert.equal(new WebhookSigner([secret]).sign(id, timestamp, Buffer.from(body)), signature);
  });

  it('verifies the published signature', () => {
    const headers = {
      'webhook-id': VECTOR.id,
      'webhook-timestamp': String(VECTOR.timestamp),
      'webhook-signature': VECTOR.signature,
    };
    // The vector's body is not a webhook payload, so it gets past the signature and stops at
    // the payload check.
    rejects('invalid_payload', () =>
      verifyWebhook(VECTOR.secret, headers, VECTOR.body, { now: VECTOR.timestamp * 1000 }),
    );
    rejects('no_matching_signature', () =>
      verifyWebhook(VECTOR.secret, headers, VECTOR.body.replace(' ', ''), {
        now: VECTOR.timestamp * 1000,
      }),
    );
    // The same secret without its prefix, as the reference libraries also accept.
    rejects('invalid_payload', () =>
      verifyWebhook(VECTOR.secret.slice('whsec_'.length), headers, VECTOR.body, {
        now: VECTOR.timestamp * 1000,
      }),
    );
  });

  it('the independent receiver agrees with the vector', () => {
    const headers = {
      'webhook-id': VECTOR.id,
      'webhook-timestamp': String(VECTOR.timestamp),
      'webhook-signature': VECTOR.signature,
    };
    assert.ok(specVerify(VECTOR.secret, headers, VECTOR.body, VECTOR.timestamp));
  });
});

describe('signatureHeader, checked by a receiver written from the spec', () => {
  it('verifies a signature with one secret', () => {
    const secret = generateWebhookSecret();
    assert.ok(specVerify(secret, headersFor([secret]), BODY, NOW_S));
    assert.ok(!specVerify(generateWebhookSecret(), headersFor([secret]), BODY, NOW_S));
  });

  it('after rotation, either secret alone verifies the two-signature header', () => {
    const oldSecret = generateWebhookSecret();
    const newSecret = generateWebhookSecret();
    const headers = headersFor([oldSecret, newSecret]);
    const entries = headers['webhook-signature']!.split(' ');
    assert.equal(entries.length, 2);
    assert.ok(entries.every((entry) => entry.startsWith('v1,')));
    assert.ok(specVerify(oldSecret, headers, BODY, NOW_S));
    assert.ok(specVerify(newSecret, headers, BODY, NOW_S));
    assert.ok(!specVerify(generateWebhookSecret(), headers, BODY, NOW_S));
    // The order of the signatures is the order of the secrets.
    assert.equal(
      entries[0],
      signatureHeader({ id: 'msg_1', timestamp: NOW_S, body: BODY, secrets: [oldSecret] }),
    );
    assert.equal(
      entries[1],
      signatureHeader({ id: 'msg_1', timestamp: NOW_S, body: BODY, secrets: [newSecret] }),
    );
    // And verifyWebhook agrees.
    assert.equal(
      verifyWebhook(oldSecret, headers, BODY, { now: NOW_MS }).type,
      'operation.succeeded',
    );
    assert.equal(
      verifyWebhook(newSecret, headers, BODY, { now: NOW_MS }).type,
      'operation.succeeded',
    );
  });

  it('the independent receiver rejects a tampered body, id or timestamp', () => {
    const secret = generateWebhookSecret();
    const headers = headersFor([secret]);
    assert.ok(!specVerify(secret, headers, BODY.replace('op_1', 'op_2'), NOW_S));
    assert.ok(!specVerify(secret, { ...headers, 'webhook-id': 'msg_2' }, BODY, NOW_S));
    assert.ok(
      !specVerify(secret, { ...headers, 'webhook-timestamp': String(NOW_S + 1) }, BODY, NOW_S),
    );
  });
});

describe('verifyWebhook', () => {
  const secret = generateWebhookSecret();

  it('returns the payload of a valid delivery', () => {
    assert.deepEqual(verifyWebhook(secret, headersFor([secret]), BODY, { now: NOW_MS }), {
      type: 'operation.succeeded',
      timestamp: '2023-11-14T22:13:20.000Z',
      data: { id: 'op_1', status: 'succeeded' },
    });
  });

  it('accepts the body as a string, a Buffer or a Uint8Array', () => {
    const headers = headersFor([secret]);
    const bytes = new TextEncoder().encode(BODY);
    for (const body of [BODY, Buffer.from(BODY), bytes]) {
      assert.equal(
        verifyWebhook(secret, headers, body, { now: NOW_MS }).type,
        'operation.succeeded',
      );
    }
  });

  it('signs a non-ASCII body over its UTF-8 bytes, whether given as a string or a Buffer', () => {
    const body = JSON.stringify({ type: 'a.b', timestamp: 't', data: 'été ✓' });
    const fromString = headersFor([secret], NOW_S, body);
    const fromBuffer = webhookHeaders({
      id: 'msg_1',
      timestamp: NOW_S,
      body: Buffer.from(body),
      secrets: [secret],
    });
    assert.deepEqual(fromString, fromBuffer);
    assert.equal(
      verifyWebhook(secret, fromString, Buffer.from(body), { now: NOW_MS }).data,
      'été ✓',
    );
  });

  it('takes a fetch Headers, a plain object in any case, and array values', () => {
    const headers = headersFor([secret]);
    const fetchHeaders = new Headers(headers);
    assert.equal(
      verifyWebhook(secret, fetchHeaders, BODY, { now: NOW_MS }).type,
      'operation.succeeded',
    );
    const mixedCase = {
      'Webhook-Id': headers['webhook-id'],
      'WEBHOOK-TIMESTAMP': headers['webhook-timestamp'],
      'Webhook-Signature': [headers['webhook-signature']!],
      'content-type': 'application/json',
    };
    assert.equal(
      verifyWebhook(secret, mixedCase, BODY, { now: NOW_MS }).type,
      'operation.succeeded',
    );
  });

  it('accepts a timestamp within the tolerance and rejects one beyond it', () => {
    const verifyAt = (timestamp: number, toleranceSeconds?: number) =>
      verifyWebhook(secret, headersFor([secret], timestamp), BODY, {
        now: NOW_MS,
        toleranceSeconds,
      });
    verifyAt(NOW_S - 300);
    verifyAt(NOW_S + 300);
    rejects('timestamp_too_old', () => verifyAt(NOW_S - 301));
    rejects('timestamp_too_new', () => verifyAt(NOW_S + 301));
    rejects('timestamp_too_old', () => verifyAt(NOW_S - 3600));
    rejects('timestamp_too_new', () => verifyAt(NOW_S + 3600));
    verifyAt(NOW_S - 3600, 7200);
    rejects('timestamp_too_old', () => verifyAt(NOW_S - 11, 10));
  });

  it('rejects a timestamp that is not Unix seconds', () => {
    for (const value of ['', 'abc', '1.5', '-1', '2023-11-14T22:13:20Z', '1e9']) {
      const headers = { ...headersFor([secret]), 'webhook-timestamp': value };
      rejects(value === '' ? 'missing_headers' : 'invalid_timestamp', () =>
        verifyWebhook(secret, headers, BODY, { now: NOW_MS }),
      );
    }
  });

  it('rejects a tampered body, id or timestamp', () => {
    const headers = headersFor([secret]);
    const verify = (h: Record<string, string>, body = BODY) =>
      verifyWebhook(secret, h, body, { now: NOW_MS });
    rejects('no_matching_signature', () => verify(headers, BODY.replace('op_1', 'op_2')));
    rejects('no_matching_signature', () => verify(headers, `${BODY} `));
    rejects('no_matching_signature', () => verify({ ...headers, 'webhook-id': 'msg_2' }));
    rejects('no_matching_signature', () =>
      verify({ ...headers, 'webhook-timestamp': String(NOW_S + 1) }),
    );
    rejects('no_matching_signature', () =>
      verify({ ...headers, 'webhook-signature': 'v1,' + 'A'.repeat(43) + '=' }),
    );
    rejects('no_matching_signature', () => verify({ ...headers, 'webhook-signature': 'garbage' }));
  });

  it('rejects a wrong secret, and accepts when any of several secrets matches', () => {
    const other = generateWebhookSecret();
    const headers = headersFor([secret]);
    rejects('no_matching_signature', () => verifyWebhook(other, headers, BODY, { now: NOW_MS }));
    assert.equal(
      verifyWebhook([other, secret], headers, BODY, { now: NOW_MS }).type,
      'operation.succeeded',
    );
  });

  it('rejects missing headers before anything else', () => {
    const headers = headersFor([secret]);
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature'] as const) {
      const partial: Record<string, string | undefined> = { ...headers, [name]: undefined };
      rejects('missing_headers', () => verifyWebhook(secret, partial, BODY, { now: NOW_MS }));
      const fetchHeaders = new Headers(headers);
      fetchHeaders.delete(name);
      rejects('missing_headers', () => verifyWebhook(secret, fetchHeaders, BODY, { now: NOW_MS }));
    }
    rejects('missing_headers', () => verifyWebhook(secret, {}, BODY, { now: NOW_MS }));
  });

  it('rejects a signed body that is not a webhook payload', () => {
    for (const body of ['not json', '[]', '{"type":1,"timestamp":"t"}', '{"type":"a"}', 'null']) {
      rejects('invalid_payload', () =>
        verifyWebhook(secret, headersFor([secret], NOW_S, body), body, { now: NOW_MS }),
      );
    }
  });

  it('refuses a secret it cannot use, with an AcceptedError rather than a rejection', () => {
    const headers = headersFor([secret]);
    for (const bad of [[], ['whsec_not base64!'], [generateSigningKeyPair().secretKey]]) {
      assert.throws(() => verifyWebhook(bad, headers, BODY, { now: NOW_MS }), AcceptedError);
    }
  });
});

describe('ed25519 (v1a)', () => {
  it('signs with whsk_ and verifies with whpk_', () => {
    const { secretKey, publicKey } = generateSigningKeyPair();
    const headers = headersFor([secretKey]);
    assert.match(headers['webhook-signature']!, /^v1a,[A-Za-z0-9+/]{86}==$/);
    assert.equal(
      verifyWebhook(publicKey, headers, BODY, { now: NOW_MS }).type,
      'operation.succeeded',
    );
    rejects('no_matching_signature', () =>
      verifyWebhook(publicKey, headers, BODY.replace('op_1', 'op_2'), { now: NOW_MS }),
    );
    rejects('no_matching_signature', () =>
      verifyWebhook(generateSigningKeyPair().publicKey, headers, BODY, { now: NOW_MS }),
    );
  });

  it('does not mix the schemes', () => {
    const { secretKey, publicKey } = generateSigningKeyPair();
    const secret = generateWebhookSecret();
    // A v1a signature is not accepted by an HMAC secret...
    rejects('no_matching_signature', () =>
      verifyWebhook(secret, headersFor([secretKey]), BODY, { now: NOW_MS }),
    );
    // ...nor a v1 signature by a public key, even relabelled as v1a.
    const hmacHeaders = headersFor([secret]);
    rejects('no_matching_signature', () =>
      verifyWebhook(publicKey, hmacHeaders, BODY, { now: NOW_MS }),
    );
    const relabelled = {
      ...hmacHeaders,
      'webhook-signature': hmacHeaders['webhook-signature']!.replace(/^v1,/, 'v1a,'),
    };
    rejects('no_matching_signature', () =>
      verifyWebhook(secret, relabelled, BODY, { now: NOW_MS }),
    );
    rejects('no_matching_signature', () =>
      verifyWebhook(publicKey, relabelled, BODY, { now: NOW_MS }),
    );
  });

  it('signs with both schemes at once, and each key verifies its own', () => {
    const { secretKey, publicKey } = generateSigningKeyPair();
    const secret = generateWebhookSecret();
    const headers = headersFor([secret, secretKey]);
    assert.match(headers['webhook-signature']!, /^v1,\S+ v1a,\S+$/);
    verifyWebhook(secret, headers, BODY, { now: NOW_MS });
    verifyWebhook(publicKey, headers, BODY, { now: NOW_MS });
    assert.ok(specVerify(secret, headers, BODY, NOW_S));
  });
});

describe('secrets and input checks', () => {
  it('generates whsec_ secrets of 32 random bytes', () => {
    const secret = generateWebhookSecret();
    assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    assert.equal(Buffer.from(secret.slice('whsec_'.length), 'base64').length, 32);
    assert.notEqual(secret, generateWebhookSecret());
  });

  it('generates whsk_ keys of seed and public key, and whpk_ keys of the public key', () => {
    const { secretKey, publicKey } = generateSigningKeyPair();
    assert.ok(secretKey.startsWith('whsk_'));
    assert.ok(publicKey.startsWith('whpk_'));
    const secretBytes = Buffer.from(secretKey.slice('whsk_'.length), 'base64');
    const publicBytes = Buffer.from(publicKey.slice('whpk_'.length), 'base64');
    assert.equal(secretBytes.length, 64);
    assert.equal(publicBytes.length, 32);
    assert.deepEqual(secretBytes.subarray(32), publicBytes);
  });

  it('refuses a whsk_ key whose public half does not match its seed', () => {
    const one = Buffer.from(generateSigningKeyPair().secretKey.slice('whsk_'.length), 'base64');
    const two = Buffer.from(generateSigningKeyPair().secretKey.slice('whsk_'.length), 'base64');
    const mixed = `whsk_${Buffer.concat([one.subarray(0, 32), two.subarray(32)]).toString('base64')}`;
    assert.throws(() => new WebhookSigner([mixed]), AcceptedError);
  });

  it('throws on an unknown prefix, a short secret, no secret, an id with a dot, a bad timestamp', () => {
    const secret = generateWebhookSecret();
    const sign = (input: Partial<Parameters<typeof signatureHeader>[0]>) =>
      signatureHeader({ id: 'msg_1', timestamp: NOW_S, body: BODY, secrets: [secret], ...input });
    assert.throws(() => sign({ secrets: ['sk_abc'] }), AcceptedError);
    assert.throws(() => sign({ secrets: [secret.slice('whsec_'.length)] }), AcceptedError);
    assert.throws(() => sign({ secrets: [generateSigningKeyPair().publicKey] }), AcceptedError);
    assert.throws(
      () => sign({ secrets: ['whsec_' + Buffer.alloc(8).toString('base64')] }),
      AcceptedError,
    );
    assert.throws(() => sign({ secrets: [] }), AcceptedError);
    assert.throws(() => sign({ id: 'msg.1' }), AcceptedError);
    assert.throws(() => sign({ id: '' }), AcceptedError);
    assert.throws(() => sign({ timestamp: 1.5 }), AcceptedError);
    assert.throws(() => sign({ timestamp: -1 }), AcceptedError);
    assert.throws(() => new WebhookSigner(['nope']), AcceptedError);
  });

  it('WebhookSigner and signatureHeader agree', () => {
    const { secretKey } = generateSigningKeyPair();
    const secrets = [generateWebhookSecret(), secretKey];
    const signer = new WebhookSigner(secrets);
    // ed25519 signatures are deterministic, so the two give the same header.
    assert.equal(
      signer.sign('msg_1', NOW_S, BODY),
      signatureHeader({ id: 'msg_1', timestamp: NOW_S, body: BODY, secrets }),
    );
    assert.deepEqual(signer.headers('msg_1', NOW_S, BODY), headersFor(secrets));
  });
});
