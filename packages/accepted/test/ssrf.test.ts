import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { AcceptedError } from '../src/domain/errors.ts';
import {
  WebhookSender,
  judgeAddresses,
  parseRetryAfter,
  type SendResult,
} from '../src/webhooks/sender.ts';
import { AddressPolicy, checkWebhookUrl, parseHostAddress } from '../src/webhooks/ssrf.ts';

const LOOPBACK = ['127.0.0.0/8', '::1/128'];

describe('parseHostAddress', () => {
  const spellings: [string, string | null][] = [
    ['127.0.0.1', '127.0.0.1'],
    ['2130706433', '127.0.0.1'],
    ['0x7f.0.0.1', '127.0.0.1'],
    ['0X7F.0.0.1', '127.0.0.1'],
    ['0177.0.0.1', '127.0.0.1'],
    ['127.1', '127.0.0.1'],
    ['127.0.1', '127.0.0.1'],
    ['0x7f000001', '127.0.0.1'],
    ['0x7f.1', '127.0.0.1'],
    ['127.0.0.1.', '127.0.0.1'],
    ['0', '0.0.0.0'],
    ['4294967295', '255.255.255.255'],
    ['::1', '::1'],
    ['[::1]', '::1'],
    ['[::ffff:127.0.0.1]', '127.0.0.1'],
    ['[::ffff:7f00:1]', '127.0.0.1'],
    ['::127.0.0.1', '::7f00:1'],
    ['[0:0:0:0:0:0:0:1]', '::1'],
    ['FE80::1%eth0', 'fe80::1'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['example.com', null],
    ['localhost', null],
    ['1.2.3.4.5', null],
    ['08.0.0.1', null],
    ['4294967296', null],
    ['256.0.0.1', null],
    ['1.2.3.0x100', null],
    ['[127.0.0.1]', null],
    ['::ffff:1.2.3.04', null],
    ['', null],
  ];
  for (const [host, expected] of spellings) {
    it(`${JSON.stringify(host)} -> ${String(expected)}`, () => {
      assert.equal(parseHostAddress(host), expected);
    });
  }

  it('agrees with the WHATWG URL parser, which canonicalises first', () => {
    for (const host of ['2130706433', '0x7f.0.0.1', '0177.0.0.1', '127.1', '[::ffff:7f00:1]']) {
      const hostname = new URL(`http://${host}/`).hostname;
      assert.equal(parseHostAddress(hostname), '127.0.0.1', `${host} (${hostname})`);
    }
    assert.equal(parseHostAddress(new URL('http://[::127.0.0.1]/').hostname), '::7f00:1');
  });
});

describe('AddressPolicy', () => {
  const policy = new AddressPolicy();
  const blocked: [string, string][] = [
    ['127.0.0.1', 'loopback'],
    ['2130706433', 'loopback'],
    ['0x7f.0.0.1', 'loopback'],
    ['0177.0.0.1', 'loopback'],
    ['127.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['::1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::127.0.0.1', 'loopback'],
    ['::ffff:0:7f00:1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['::ffff:10.0.0.1', 'private'],
    ['169.254.169.254', 'link-local'],
    ['100.64.0.1', 'cgnat'],
    ['100.127.255.255', 'cgnat'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'this-network'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['192.0.2.1', 'documentation'],
    ['198.51.100.7', 'documentation'],
    ['203.0.113.9', 'documentation'],
    ['198.18.0.1', 'benchmarking'],
    ['198.19.255.1', 'benchmarking'],
    ['240.0.0.1', 'reserved'],
    ['192.0.0.170', 'reserved'],
    ['192.88.99.1', '6to4'],
    ['::', 'unspecified'],
    ['fe80::1', 'link-local'],
    ['febf::1', 'link-local'],
    ['fc00::1', 'unique-local'],
    ['fd12::1', 'unique-local'],
    ['fd00:ec2::254', 'unique-local'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'documentation'],
    ['3fff::1', 'documentation'],
    ['2001:2::1', 'benchmarking'],
    ['64:ff9b::7f00:1', 'loopback'],
    ['64:ff9b::127.0.0.1', 'loopback'],
    ['64:ff9b::a9fe:a9fe', 'link-local'],
    ['64:ff9b:1::a00:1', 'private'],
    ['64:ff9b:1::808:808', 'nat64'],
    ['2002:7f00:1::', 'loopback'],
    ['2002:a00:1::1', 'private'],
    ['2002:808:808::1', '6to4'],
    ['2001::1', 'teredo'],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'teredo'],
    ['100::1', 'discard'],
    ['fec0::1', 'reserved'],
    ['4000::1', 'reserved'],
  ];
  for (const [ip, rule] of blocked) {
    it(`blocks ${ip} (${rule})`, () => {
      assert.deepEqual(policy.check(ip), { allowed: false, rule });
    });
  }

  for (const ip of [
    '8.8.8.8',
    '1.1.1.1',
    '2606:4700::1111',
    '2a00:1450:4001:81d::200e',
    '::ffff:8.8.8.8',
    '64:ff9b::808:808',
    '100.128.0.1',
    '172.32.0.1',
    '198.20.0.1',
  ]) {
    it(`allows ${ip}`, () => {
      assert.deepEqual(policy.check(ip), { allowed: true });
    });
  }

  it('refuses what is not an IP address', () => {
    assert.deepEqual(policy.check('example.com'), { allowed: false, rule: 'malformed' });
  });

  it('lets the allow-list win over the block list, in every spelling', () => {
    const loopback = new AddressPolicy(['127.0.0.0/8']);
    for (const ip of [
      '127.0.0.1',
      '127.9.9.9',
      '2130706433',
      '0x7f.0.0.1',
      '0177.0.0.1',
      '127.1',
      '::ffff:127.0.0.1',
      '::ffff:7f00:1',
      '64:ff9b::7f00:1',
    ]) {
      assert.deepEqual(loopback.check(ip), { allowed: true }, ip);
    }
    assert.deepEqual(loopback.check('10.0.0.1'), { allowed: false, rule: 'private' });
    assert.deepEqual(loopback.check('::1'), { allowed: false, rule: 'loopback' });
    // 6to4 reaches the address through a relay: not the same host, still refused.
    assert.deepEqual(loopback.check('2002:7f00:1::'), { allowed: false, rule: 'loopback' });
    const both = new AddressPolicy(LOOPBACK);
    assert.deepEqual(both.check('::1'), { allowed: true });
    assert.deepEqual(new AddressPolicy(['10.1.2.3']).check('10.1.2.3'), { allowed: true });
    assert.deepEqual(new AddressPolicy(['10.1.2.3']).check('10.1.2.4'), {
      allowed: false,
      rule: 'private',
    });
  });

  it('names a bad CIDR', () => {
    for (const cidr of ['10.0.0.0/33', '::1/129', 'bogus', '10.0.0.0/', '10.0.0.0/x', '']) {
      assert.throws(
        () => new AddressPolicy([cidr]),
        (error: unknown) =>
          error instanceof AcceptedError &&
          error.code === 'VALIDATION_FAILED' &&
          error.message.includes(cidr),
        cidr,
      );
    }
  });
});

/** Runs `fn` and returns the AcceptedError it throws. */
function refusal(fn: () => unknown): AcceptedError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof AcceptedError);
    return error;
  }
  assert.fail('expected a refusal');
}

describe('checkWebhookUrl', () => {
  const policy = new AddressPolicy();

  it('returns the parsed URL of a public URL', () => {
    assert.equal(
      checkWebhookUrl('https://example.com/hooks?x=1', policy).href,
      'https://example.com/hooks?x=1',
    );
    assert.equal(checkWebhookUrl('http://8.8.8.8:8080/', policy).port, '8080');
  });

  const refused: [string, string][] = [
    ['ftp://example.com/', 'scheme'],
    ['file:///etc/passwd', 'scheme'],
    ['javascript:alert(1)', 'scheme'],
    ['ws://example.com/', 'scheme'],
    ['not a url', 'malformed'],
    ['http://', 'malformed'],
    ['https://user:pass@example.com/', 'credentials'],
    ['https://user@example.com/', 'credentials'],
    ['http://127.0.0.1/', 'loopback'],
    ['http://2130706433/', 'loopback'],
    ['http://0x7f.0.0.1:8080/', 'loopback'],
    ['http://0177.0.0.1/', 'loopback'],
    ['http://127.1/', 'loopback'],
    ['http://[::1]/', 'loopback'],
    ['http://[::ffff:127.0.0.1]/', 'loopback'],
    ['http://[::ffff:7f00:1]/', 'loopback'],
    ['http://169.254.169.254/latest/meta-data/', 'link-local'],
    ['http://10.0.0.1/', 'private'],
    ['http://[fd00::1]/', 'unique-local'],
    ['http://localhost:3000/', 'loopback'],
    ['http://api.localhost/', 'loopback'],
    ['http://LOCALHOST./', 'loopback'],
  ];
  for (const [url, rule] of refused) {
    it(`refuses ${url} (${rule})`, () => {
      const error = refusal(() => checkWebhookUrl(url, policy, '/endpoint/url'));
      assert.equal(error.code, 'URL_NOT_ALLOWED');
      assert.equal(error.status, 422);
      assert.deepEqual(error.details, { rule });
      assert.equal(error.fields?.[0]?.field, '/endpoint/url');
      assert.ok(error.fix);
    });
  }

  it('allows allow-listed literals and localhost names', () => {
    const loopback = new AddressPolicy(['127.0.0.0/8']);
    for (const url of ['http://127.0.0.1:8080/', 'http://0x7f.0.0.1/', 'http://localhost:3000/']) {
      assert.ok(checkWebhookUrl(url, loopback) instanceof URL, url);
    }
    assert.deepEqual(refusal(() => checkWebhookUrl('http://10.0.0.1/', loopback)).details, {
      rule: 'private',
    });
  });
});

describe('judgeAddresses (every address a name resolves to)', () => {
  const policy = new AddressPolicy(['203.0.113.7/32']);
  it('refuses a name with a public and a blocked address, wherever the blocked one is', () => {
    for (const addresses of [
      ['8.8.8.8', '10.0.0.1'],
      ['10.0.0.1', '8.8.8.8'],
      ['2001:4860:4860::8888', '8.8.4.4', '::1'],
      ['203.0.113.7', '169.254.169.254'],
    ]) {
      const refused = judgeAddresses(
        'h.example',
        addresses.map((address) => ({ address })),
        policy,
      );
      assert.equal(refused?.sendCode, 'BLOCKED_ADDRESS', addresses.join(', '));
      assert.match(refused.message, /h\.example resolves to /);
    }
  });
  it('allows a name whose every address may be called, and refuses one with none', () => {
    const ok = ['8.8.8.8', '2001:4860:4860::8888', '203.0.113.7'].map((address) => ({ address }));
    assert.equal(judgeAddresses('h.example', ok, policy), null);
    assert.equal(judgeAddresses('h.example', [], policy)?.sendCode, 'DNS_FAILED');
  });
});

describe('parseRetryAfter', () => {
  it('reads delay-seconds and HTTP-dates', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(parseRetryAfter('7', now), 7000);
    assert.equal(parseRetryAfter(' 0 ', now), 0);
    assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now), 30_000);
    assert.equal(parseRetryAfter('Wed, 31 Dec 2025 00:00:00 GMT', now), 0);
    assert.equal(parseRetryAfter('soon', now), null);
    assert.equal(parseRetryAfter(undefined, now), null);
  });
});

/** A real HTTP server on 127.0.0.1 that records requests and connections. */
interface Receiver {
  url: string;
  port: number;
  requests: { url: string; method: string; headers: http.IncomingHttpHeaders; body: string }[];
  connections: number;
  handle: (req: http.IncomingMessage, res: http.ServerResponse) => void;
  close: () => Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const receiver: Receiver = {
    url: '',
    port: 0,
    requests: [],
    connections: 0,
    handle: (_req, res) => res.end('{"ok":true}'),
    close: () => Promise.resolve(),
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      receiver.requests.push({
        url: req.url ?? '',
        method: req.method ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      receiver.handle(req, res);
    });
  });
  server.on('connection', () => receiver.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.port = (server.address() as AddressInfo).port;
  receiver.url = `http://127.0.0.1:${receiver.port}`;
  receiver.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return receiver;
}

const DELIVERY = {
  headers: { 'content-type': 'application/json', 'webhook-id': 'msg_1' },
  body: '{"type":"operation.succeeded"}',
};

function assertError(result: SendResult, code: string): void {
  assert.equal(result.error?.code, code, JSON.stringify(result.error));
  assert.equal(result.ok, false);
}

describe('WebhookSender', () => {
  let receiver: Receiver;
  let open: WebhookSender;
  let closed: WebhookSender;

  before(async () => {
    receiver = await startReceiver();
    open = new WebhookSender({ policy: new AddressPolicy(LOOPBACK), timeoutMs: 5000 });
    closed = new WebhookSender({ policy: new AddressPolicy(), timeoutMs: 5000 });
  });
  after(async () => {
    open.close();
    closed.close();
    await receiver.close();
  });

  function reset(handle: Receiver['handle']): void {
    receiver.requests.length = 0;
    receiver.handle = handle;
  }

  it('delivers to an allow-listed receiver and returns status, headers and the body', async () => {
    reset((_req, res) => {
      res.setHeader('x-receiver', 'yes');
      res.statusCode = 202;
      res.end('x'.repeat(5000));
    });
    const result = await open.send({ url: `${receiver.url}/hooks?a=1`, ...DELIVERY });
    assert.equal(result.error, null);
    assert.equal(result.ok, true);
    assert.equal(result.status, 202);
    assert.equal(result.headers['x-receiver'], 'yes');
    assert.equal(result.body, 'x'.repeat(4096));
    assert.equal(result.retryAfterMs, null);
    assert.ok(result.durationMs >= 0);
    const [seen] = receiver.requests;
    assert.equal(receiver.requests.length, 1);
    assert.equal(seen?.method, 'POST');
    assert.equal(seen?.url, '/hooks?a=1');
    assert.equal(seen?.body, DELIVERY.body);
    assert.equal(seen?.headers['content-type'], 'application/json');
    assert.equal(seen?.headers['webhook-id'], 'msg_1');
    assert.equal(seen?.headers.host, `127.0.0.1:${receiver.port}`);
    assert.match(seen?.headers['user-agent'] ?? '', /Accepted/);
  });

  it('sends Buffer bodies and returns short bodies whole', async () => {
    reset((_req, res) => res.end('thanks'));
    const result = await open.send({
      url: receiver.url,
      headers: {},
      body: Buffer.from('{"n":1}'),
    });
    assert.equal(result.status, 200);
    assert.equal(result.body, 'thanks');
    assert.equal(receiver.requests[0]?.body, '{"n":1}');
    assert.equal(receiver.requests[0]?.headers['content-type'], 'application/json');
  });

  it('refuses a loopback receiver that is not allow-listed, before connecting', async () => {
    reset((_req, res) => res.end());
    const before = receiver.connections;
    for (const host of ['127.0.0.1', '0x7f.0.0.1', '2130706433', '127.1', '[::ffff:7f00:1]']) {
      const result = await closed.send({ url: `http://${host}:${receiver.port}/`, ...DELIVERY });
      assertError(result, 'BLOCKED_ADDRESS');
      assert.equal(result.error?.rule, 'loopback', host);
      assert.equal(result.status, null);
    }
    assert.equal(receiver.requests.length, 0);
    assert.equal(receiver.connections, before);
  });

  it('refuses localhost through DNS unless allow-listed', async () => {
    reset((_req, res) => res.end('hi'));
    const before = receiver.connections;
    const url = `http://localhost:${receiver.port}/`;
    const refused = await closed.send({ url, ...DELIVERY });
    assertError(refused, 'BLOCKED_ADDRESS');
    assert.equal(refused.error?.rule, 'loopback');
    assert.match(refused.error?.message ?? '', /localhost resolves to/);
    assert.equal(receiver.requests.length, 0);
    assert.equal(receiver.connections, before);

    const allowed = await open.send({ url, ...DELIVERY });
    assert.equal(allowed.error, null);
    assert.equal(allowed.status, 200);
    assert.equal(receiver.requests.length, 1);
  });

  it('refuses URLs it may not call without throwing', async () => {
    for (const [url, rule] of [
      ['ftp://example.com/', 'scheme'],
      ['http://u:p@127.0.0.1/', 'credentials'],
      ['nope', 'malformed'],
      ['http://169.254.169.254/', 'link-local'],
    ] as const) {
      const result = await open.send({ url, ...DELIVERY });
      assertError(result, 'BLOCKED_ADDRESS');
      assert.equal(result.error?.rule, rule);
    }
  });

  it('does not follow redirects', async () => {
    reset((req, res) => {
      res.statusCode = req.url === '/target' ? 200 : 302;
      if (req.url !== '/target') res.setHeader('location', `${receiver.url}/target`);
      res.end();
    });
    const result = await open.send({ url: `${receiver.url}/start`, ...DELIVERY });
    assert.equal(result.error, null);
    assert.equal(result.ok, false);
    assert.equal(result.status, 302);
    assert.equal(result.headers.location, `${receiver.url}/target`);
    assert.deepEqual(
      receiver.requests.map((r) => r.url),
      ['/start'],
    );
  });

  it('times out on a receiver that never answers', async () => {
    reset(() => {
      /* never answers */
    });
    // The request's own limit (200 ms) applies, not the sender's (5 s): the sender measures
    // the attempt, and it ended at the shorter one.
    const result = await open.send({ url: receiver.url, ...DELIVERY, timeoutMs: 200 });
    assertError(result, 'TIMEOUT');
    assert.equal(result.status, null);
    assert.ok(result.durationMs >= 190 && result.durationMs < 5000, `${result.durationMs} ms`);
  });

  it('times out when the body stops coming, keeping what arrived', async () => {
    reset((_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
    });
    const result = await open.send({ url: receiver.url, ...DELIVERY, timeoutMs: 200 });
    assertError(result, 'TIMEOUT');
    assert.equal(result.status, 200);
    assert.equal(result.body, 'partial');
  });

  it('reads Retry-After as seconds or as an HTTP-date', async () => {
    reset((_req, res) => {
      res.writeHead(429, { 'retry-after': '7' });
      res.end();
    });
    const seconds = await open.send({ url: receiver.url, ...DELIVERY });
    assert.equal(seconds.status, 429);
    assert.equal(seconds.ok, false);
    assert.equal(seconds.retryAfterMs, 7000);

    reset((_req, res) => {
      res.writeHead(503, { 'retry-after': new Date(Date.now() + 60_000).toUTCString() });
      res.end();
    });
    const date = await open.send({ url: receiver.url, ...DELIVERY });
    assert.equal(date.status, 503);
    assert.ok(
      date.retryAfterMs !== null && date.retryAfterMs > 55_000 && date.retryAfterMs <= 60_000,
      String(date.retryAfterMs),
    );
  });

  /** Answers with `total` bytes in 64 kB writes, each after the last one left; counts them. */
  function stream(total: number, chunked: boolean): { written: () => number } {
    let written = 0;
    const chunk = Buffer.alloc(64 * 1024, 'a');
    reset((_req, res) => {
      res.writeHead(200, chunked ? {} : { 'content-length': String(total) });
      const next = (): void => {
        if (written >= total || res.destroyed) {
          res.end();
          return;
        }
        written += chunk.length;
        res.write(chunk, (error) => {
          if (!error) next();
        });
      };
      next();
    });
    return { written: () => written };
  }

  it('keeps 4096 bytes of a 10 MB body and does not read the rest', async () => {
    const total = 10 * 1024 * 1024;
    for (const chunked of [false, true]) {
      const server = stream(total, chunked);
      const result = await open.send({ url: receiver.url, ...DELIVERY });
      assert.equal(result.error, null);
      assert.equal(result.status, 200);
      assert.equal(result.body, 'a'.repeat(4096));
      assert.ok(server.written() < total, `the sender waited for ${server.written()} bytes`);
      // The connection is closed, so the receiver stops writing.
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.ok(server.written() < total, `the receiver wrote ${server.written()} bytes`);
    }
  });

  it('reuses connections: 200 sequential sends open few sockets', async () => {
    reset((_req, res) => res.end('ok'));
    const sender = new WebhookSender({ policy: new AddressPolicy(LOOPBACK) });
    const before = receiver.connections;
    try {
      for (let i = 0; i < 200; i++) {
        const result = await sender.send({ url: `${receiver.url}/n/${i}`, ...DELIVERY });
        assert.equal(result.status, 200);
      }
    } finally {
      sender.close();
    }
    assert.equal(receiver.requests.length, 200);
    assert.ok(receiver.connections - before < 10, `${receiver.connections - before} connections`);
  });

  it('drains a small remainder past 4096 bytes and reuses the connection', async () => {
    reset((_req, res) => res.end('y'.repeat(10_000)));
    const sender = new WebhookSender({ policy: new AddressPolicy(LOOPBACK) });
    const before = receiver.connections;
    try {
      for (let i = 0; i < 20; i++) {
        const result = await sender.send({ url: receiver.url, ...DELIVERY });
        assert.equal(result.body.length, 4096);
      }
    } finally {
      sender.close();
    }
    assert.ok(receiver.connections - before < 5, `${receiver.connections - before} connections`);
  });

  it('returns ABORTED for an aborted signal', async () => {
    reset((_req, res) => res.end());
    const early = await open.send({ url: receiver.url, ...DELIVERY, signal: AbortSignal.abort() });
    assertError(early, 'ABORTED');
    assert.equal(receiver.requests.length, 0);

    reset(() => {
      /* never answers */
    });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const late = await open.send({ url: receiver.url, ...DELIVERY, signal: controller.signal });
    assertError(late, 'ABORTED');
  });

  it('reports a refused connection and a failed lookup', async () => {
    const gone = await startReceiver();
    const port = gone.port;
    await gone.close();
    const refused = await open.send({ url: `http://127.0.0.1:${port}/`, ...DELIVERY });
    assertError(refused, 'CONNECT_FAILED');

    const dns = await open.send({ url: 'http://does-not-exist.invalid/', ...DELIVERY });
    assertError(dns, 'DNS_FAILED');
  });

  it('reports a connection the receiver drops as RESET', async () => {
    reset((req) => req.socket.destroy());
    const result = await open.send({ url: receiver.url, ...DELIVERY });
    assertError(result, 'RESET');
  });
});
