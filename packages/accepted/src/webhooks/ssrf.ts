import ipaddr from 'ipaddr.js';
import { AcceptedError } from '../domain/errors.ts';

/**
 * Outbound request safety (standards §13): which addresses the server may call when it delivers
 * a webhook. Every address is judged in one canonical form, so `2130706433`, `0x7f.0.0.1`,
 * `127.1` and `[::ffff:7f00:1]` are all judged as `127.0.0.1`.
 *
 * Host names are not judged here: the sender resolves them at every connection and judges each
 * address it gets back (see sender.ts), which is the only check DNS rebinding cannot get past.
 */

/** Why an address is refused: a stable, kebab-case name of the blocked range. */
export type BlockRule =
  | 'unspecified'
  | 'this-network'
  | 'loopback'
  | 'private'
  | 'link-local'
  | 'cgnat'
  | 'multicast'
  | 'broadcast'
  | 'documentation'
  | 'reserved'
  | 'benchmarking'
  | 'unique-local'
  | 'nat64'
  | '6to4'
  | 'teredo'
  | 'discard';

/** Why a URL is refused: a blocked range, or something wrong with the URL itself. */
export type UrlRule = BlockRule | 'scheme' | 'malformed' | 'credentials';

export type AddressVerdict = { allowed: true } | { allowed: false; rule: string };

type IPv4 = ipaddr.IPv4;
type IPv6 = ipaddr.IPv6;
type Range<T> = [T, number];

function v4Ranges(table: [string, BlockRule][]): [Range<IPv4>, BlockRule][] {
  return table.map(([cidr, rule]) => [ipaddr.IPv4.parseCIDR(cidr), rule]);
}

function v6Ranges(table: [string, BlockRule][]): [Range<IPv6>, BlockRule][] {
  return table.map(([cidr, rule]) => [ipaddr.IPv6.parseCIDR(cidr), rule]);
}

/** Blocked IPv4 ranges; the first that matches names the rule (so specific ones come first). */
const IPV4_BLOCKED = v4Ranges([
  ['0.0.0.0/32', 'unspecified'],
  ['0.0.0.0/8', 'this-network'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'cgnat'],
  ['127.0.0.0/8', 'loopback'],
  // Cloud metadata services (169.254.169.254) live here.
  ['169.254.0.0/16', 'link-local'],
  ['172.16.0.0/12', 'private'],
  // IETF protocol assignments: DS-Lite, NAT64 discovery (192.0.0.170/171) and the like.
  ['192.0.0.0/24', 'reserved'],
  ['192.0.2.0/24', 'documentation'],
  // The 6to4 relay anycast prefix (deprecated by RFC 7526).
  ['192.88.99.0/24', '6to4'],
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'benchmarking'],
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['240.0.0.0/4', 'reserved'],
]);

/** Blocked IPv6 ranges outside the forms that embed an IPv4 address (handled first). */
const IPV6_BLOCKED = v6Ranges([
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['100::/64', 'discard'],
  ['2001::/32', 'teredo'],
  ['2001:2::/48', 'benchmarking'],
  // The rest of the IETF protocol assignments block (ORCHID, AMT, AS112, anycast services).
  ['2001::/23', 'reserved'],
  ['2001:db8::/32', 'documentation'],
  ['3fff::/20', 'documentation'],
  ['fc00::/7', 'unique-local'],
  ['fe80::/10', 'link-local'],
  ['ff00::/8', 'multicast'],
]);

/** Global unicast: any IPv6 address outside it (and not matched above) is `reserved`. */
const IPV6_GLOBAL = ipaddr.IPv6.parseCIDR('2000::/3');
const IPV6_UNSPECIFIED = ipaddr.IPv6.parseCIDR('::/128');
const IPV6_LOOPBACK = ipaddr.IPv6.parseCIDR('::1/128');

/**
 * Forms that name an IPv4 host directly and are judged as that host, allow-list included:
 * IPv4-mapped, IPv4-compatible (deprecated), SIIT (RFC 6145), and the well-known NAT64 prefix
 * (RFC 6052), which a DNS64 resolver hands out for IPv4-only names.
 */
const IPV6_SAME_HOST: Range<IPv6>[] = [
  ipaddr.IPv6.parseCIDR('::ffff:0:0/96'),
  ipaddr.IPv6.parseCIDR('::ffff:0:0:0/96'),
  ipaddr.IPv6.parseCIDR('64:ff9b::/96'),
  ipaddr.IPv6.parseCIDR('::/96'),
];
const IPV4_MAPPED = ipaddr.IPv6.parseCIDR('::ffff:0:0/96');
/** Local-use NAT64 (RFC 8215): translated by a gateway of the operator, always refused. */
const IPV6_NAT64_LOCAL = ipaddr.IPv6.parseCIDR('64:ff9b:1::/48');
/** 6to4 (RFC 3056, deprecated): reaches the embedded IPv4 through a relay, always refused. */
const IPV6_6TO4 = ipaddr.IPv6.parseCIDR('2002::/16');

function ipv4FromParts(high: number, low: number): IPv4 {
  return new ipaddr.IPv4([high >> 8, high & 0xff, low >> 8, low & 0xff]);
}

function firstMatch<T extends IPv4 | IPv6>(
  address: T,
  table: [Range<T>, BlockRule][],
): BlockRule | null {
  for (const [range, rule] of table) if (address.match(range)) return rule;
  return null;
}

/** One part of an IPv4 address as the WHATWG URL parser reads it: decimal, 0x-hex or 0-octal. */
function parseIPv4Number(part: string): number | null {
  if (part === '') return null;
  let digits = part;
  let radix = 10;
  if (digits.length >= 2 && digits[0] === '0' && (digits[1] === 'x' || digits[1] === 'X')) {
    digits = digits.slice(2);
    radix = 16;
  } else if (digits.length >= 2 && digits[0] === '0') {
    digits = digits.slice(1);
    radix = 8;
  }
  if (digits === '') return 0;
  const valid = radix === 16 ? /^[0-9a-f]+$/i : radix === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!valid.test(digits)) return null;
  return parseInt(digits, radix);
}

/**
 * An IPv4 address in any spelling the WHATWG URL parser (and inet_aton) accepts: one to four
 * dot-separated parts, each decimal, hex or octal, the last filling the remaining bytes, with
 * one trailing dot allowed. Null when it is not one.
 */
function parseIPv4(input: string): IPv4 | null {
  const parts = input.split('.');
  if (parts.length > 1 && parts[parts.length - 1] === '') parts.pop();
  if (parts.length > 4) return null;
  const numbers: number[] = [];
  for (const part of parts) {
    const n = parseIPv4Number(part);
    if (n === null) return null;
    numbers.push(n);
  }
  const last = numbers.pop();
  if (last === undefined || last >= 256 ** (4 - numbers.length)) return null;
  let value = last;
  for (const [i, n] of numbers.entries()) {
    if (n > 255) return null;
    value += n * 256 ** (3 - i);
  }
  return new ipaddr.IPv4([value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff]);
}

/** `a.b.c.d` strictly (decimal, no leading zeros), as allowed at the end of an IPv6 address. */
const DOTTED_QUAD = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/;

/**
 * An IPv6 address, with or without brackets; a zone (`%eth0`) is dropped. A trailing dotted
 * quad is rewritten to hex first, because ipaddr.js reads `::1.2.3.4` as IPv4-mapped.
 */
function parseIPv6(input: string): IPv6 | null {
  let text = input.startsWith('[') && input.endsWith(']') ? input.slice(1, -1) : input;
  const zone = text.indexOf('%');
  if (zone !== -1) text = text.slice(0, zone);
  const colon = text.lastIndexOf(':');
  if (colon === -1) return null;
  const tail = text.slice(colon + 1);
  if (tail.includes('.')) {
    const quad = DOTTED_QUAD.exec(tail);
    const bytes = quad?.slice(1).map(Number) ?? [];
    if (bytes.length !== 4 || bytes.some((b) => b > 255)) return null;
    const [a = 0, b = 0, c = 0, d = 0] = bytes;
    text = `${text.slice(0, colon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  if (!ipaddr.IPv6.isValid(text)) return null;
  return ipaddr.IPv6.parse(text);
}

function parseAddress(host: string): IPv4 | IPv6 | null {
  return host.includes(':') ? parseIPv6(host) : parseIPv4(host);
}

/** The canonical text of an address: dotted decimal, or RFC 5952 (IPv4-mapped as IPv4). */
function canonical(address: IPv4 | IPv6): string {
  if (address.kind() === 'ipv6' && (address as IPv6).match(IPV4_MAPPED)) {
    return (address as IPv6).toIPv4Address().toString();
  }
  return address.kind() === 'ipv4' ? address.toString() : (address as IPv6).toRFC5952String();
}

/**
 * The canonical IP address when `host` (a URL host, brackets allowed) is an IP literal in any
 * spelling a resolver or the WHATWG URL parser accepts (`2130706433`, `0x7f.0.0.1`,
 * `0177.0.0.1`, `127.1`, `[::ffff:7f00:1]`); null for a host name. IPv4-mapped IPv6 comes back
 * as the IPv4 address it names; other IPv6 in RFC 5952 form, without a zone.
 */
export function parseHostAddress(host: string): string | null {
  const address = parseAddress(host);
  return address === null ? null : canonical(address);
}

function invalidCidr(cidr: string, problem: string): AcceptedError {
  return new AcceptedError(
    'VALIDATION_FAILED',
    `The allowed range ${cidr} is not valid: ${problem}`,
    {
      fix: 'Give CIDR ranges such as 127.0.0.0/8 or ::1/128 (a bare address means just itself).',
      details: { cidr },
    },
  );
}

function parseCidr(cidr: string): [IPv4 | IPv6, number] {
  const slash = cidr.indexOf('/');
  const text = slash === -1 ? cidr : cidr.slice(0, slash);
  const address = ipaddr.isValid(text) ? ipaddr.parse(text) : null;
  if (address === null) throw invalidCidr(cidr, 'not an IP address.');
  const max = address.kind() === 'ipv4' ? 32 : 128;
  const bitsText = slash === -1 ? String(max) : cidr.slice(slash + 1);
  const bits = /^\d{1,3}$/.test(bitsText) ? Number(bitsText) : NaN;
  if (!(bits >= 0 && bits <= max))
    throw invalidCidr(cidr, `the prefix length must be 0 to ${max}.`);
  return [address, bits];
}

/**
 * Which addresses outbound webhook requests may reach: everything public, nothing in the
 * ranges of standards §13, except what the allow-list names (for development and tests on
 * loopback: `new AddressPolicy(['127.0.0.0/8', '::1/128'])`). Allowed ranges win.
 */
export class AddressPolicy {
  /** The allow-list as given. */
  readonly allowed: readonly string[];
  private readonly allowV4: Range<IPv4>[] = [];
  private readonly allowV6: Range<IPv6>[] = [];

  /** `allow`: CIDR ranges (or bare addresses) to allow; VALIDATION_FAILED names a bad one. */
  constructor(allow: readonly string[] = []) {
    this.allowed = [...allow];
    for (const cidr of allow) {
      const [address, bits] = parseCidr(cidr.trim());
      if (address instanceof ipaddr.IPv4) this.allowV4.push([address, bits]);
      else this.allowV6.push([address, bits]);
    }
  }

  /**
   * Whether `ip` may be called, in any spelling {@link parseHostAddress} reads; when not, the
   * rule that refuses it. Anything that is not an IP address is refused (`malformed`).
   */
  check(ip: string): AddressVerdict {
    const address = parseAddress(ip);
    if (address === null) return { allowed: false, rule: 'malformed' };
    const rule =
      address.kind() === 'ipv4' ? this.judgeV4(address as IPv4) : this.judgeV6(address as IPv6);
    return rule === null ? { allowed: true } : { allowed: false, rule };
  }

  private judgeV4(address: IPv4): BlockRule | null {
    for (const range of this.allowV4) if (address.match(range)) return null;
    return firstMatch(address, IPV4_BLOCKED);
  }

  private judgeV6(address: IPv6): BlockRule | null {
    for (const range of this.allowV6) if (address.match(range)) return null;
    const [, p2 = 0, p3 = 0, , , , p7 = 0, p8 = 0] = address.parts;
    // :: and ::1 sit inside ::/96 but are not IPv4-compatible addresses.
    const special = address.match(IPV6_UNSPECIFIED) || address.match(IPV6_LOOPBACK);
    if (!special && IPV6_SAME_HOST.some((range) => address.match(range))) {
      return this.judgeV4(ipv4FromParts(p7, p8));
    }
    if (address.match(IPV6_6TO4)) {
      return firstMatch(ipv4FromParts(p2, p3), IPV4_BLOCKED) ?? '6to4';
    }
    if (address.match(IPV6_NAT64_LOCAL)) {
      return firstMatch(ipv4FromParts(p7, p8), IPV4_BLOCKED) ?? 'nat64';
    }
    const rule = firstMatch(address, IPV6_BLOCKED);
    if (rule !== null) return rule;
    return address.match(IPV6_GLOBAL) ? null : 'reserved';
  }
}

/** Why a URL may not be called. */
export interface UrlRefusal {
  rule: UrlRule;
  message: string;
  fix: string;
}

/** A URL that passed: parsed, and its IP address when the host is an IP literal. */
export interface CheckedUrl {
  url: URL;
  /** Canonical IP of an IP-literal host; null for a host name. */
  address: string | null;
}

const FIX_ADDRESS =
  'Use a public address. For development on this machine, allow the range in the webhook allow-list (for example 127.0.0.0/8).';

function refusedAddress(rule: string, what: string): UrlRefusal {
  return {
    rule: rule as UrlRule,
    message: `The URL's host ${what} is in a blocked range (${rule}).`,
    fix: FIX_ADDRESS,
  };
}

function isLocalhostName(hostname: string): boolean {
  const name = hostname.endsWith('.') ? hostname.slice(0, -1) : hostname;
  return name === 'localhost' || name.endsWith('.localhost');
}

/**
 * Parses and judges a webhook URL without throwing. `localhostNames`: refuse `localhost` and
 * `*.localhost` by name (unless 127.0.0.1 is allowed); the sender leaves them to DNS instead.
 */
export function inspectWebhookUrl(
  text: string,
  policy: AddressPolicy,
  options: { localhostNames: boolean } = { localhostNames: true },
): CheckedUrl | UrlRefusal {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return {
      rule: 'malformed',
      message: 'The URL cannot be parsed.',
      fix: 'Give an absolute URL such as https://example.com/webhooks.',
    };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return {
      rule: 'scheme',
      message: `The URL's scheme ${url.protocol} is not allowed: only http and https are.`,
      fix: 'Give an https:// URL.',
    };
  }
  if (url.username !== '' || url.password !== '') {
    return {
      rule: 'credentials',
      message: 'The URL may not carry a user name or password.',
      fix: 'Remove user:password@ from the URL; receivers verify the webhook-signature header instead.',
    };
  }
  if (url.hostname === '') {
    return { rule: 'malformed', message: 'The URL has no host.', fix: 'Give a host name.' };
  }
  const address = parseHostAddress(url.hostname);
  if (address !== null) {
    const verdict = policy.check(address);
    return verdict.allowed ? { url, address } : refusedAddress(verdict.rule, address);
  }
  if (options.localhostNames && isLocalhostName(url.hostname)) {
    const verdict = policy.check('127.0.0.1');
    if (!verdict.allowed) return refusedAddress(verdict.rule, url.hostname);
  }
  return { url, address: null };
}

/**
 * The parsed URL when the server may call it; otherwise URL_NOT_ALLOWED (422) naming the
 * `rule` in `details`: `scheme` (not http/https), `malformed`, `credentials` (user:pass@), or
 * the blocked range of an IP-literal host (or `loopback` for `localhost` names). Other host
 * names pass: their addresses are judged at every attempt, when they are resolved.
 */
export function checkWebhookUrl(url: string, policy: AddressPolicy, field = '/url'): URL {
  const result = inspectWebhookUrl(url, policy);
  if ('url' in result) return result.url;
  throw new AcceptedError('URL_NOT_ALLOWED', result.message, {
    fields: [{ field, message: result.message }],
    details: { rule: result.rule },
    fix: result.fix,
  });
}
