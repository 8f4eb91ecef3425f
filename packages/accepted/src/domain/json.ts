import { AcceptedError } from './errors.ts';

/**
 * Bounds on JSON that callers send or handlers return, checked before anything is stored.
 * A JSON value nested deeper than `MAX_JSON_DEPTH` is refused: V8's recursive
 * `JSON.stringify`/`structuredClone` overflow their stack at a few thousand levels, and a
 * stored value that can no longer be serialised would break every read of its tenant.
 */
export const MAX_JSON_DEPTH = 64;

/** Where in a JSON text a problem is (a character offset), for the error's `details`. */
function tooDeep(where: string, limit: number, position?: number): AcceptedError {
  return new AcceptedError('JSON_TOO_DEEP', `${where} is nested more than ${limit} levels deep.`, {
    details: position === undefined ? { limit } : { limit, position },
    fix: `Flatten the JSON to at most ${limit} levels of nested arrays and objects.`,
  });
}

function numberOutOfRange(token: string, position: number): AcceptedError {
  const shown = token.length > 40 ? `${token.slice(0, 40)}…` : token;
  return new AcceptedError(
    'NUMBER_OUT_OF_RANGE',
    `The number ${shown} at character ${position} cannot be kept exactly: JSON numbers here are IEEE 754 doubles, finite, with integers within ±(2^53 − 1).`,
    {
      details: { position },
      fix: 'Send large integers (ids, amounts in minor units beyond 2^53) and arbitrary-precision decimals as strings.',
    },
  );
}

/** True when the characters of `token` (a JSON number) name a non-zero value. */
function hasNonZeroDigit(token: string): boolean {
  const mantissa = token.split(/[eE]/)[0] ?? '';
  return /[1-9]/.test(mantissa);
}

/**
 * Checks a JSON text before it is parsed, in one pass: nesting depth, and numbers a JavaScript
 * number would silently alter (`1e400` becomes Infinity and is stored as `null`, `2^63` is
 * rounded, `1e-400` becomes 0). Syntax errors are left to the parser. Throws
 * `JSON_TOO_DEEP` or `NUMBER_OUT_OF_RANGE`.
 */
export function checkJsonText(text: string, maxDepth = MAX_JSON_DEPTH, where = 'The body'): void {
  let depth = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      // Skip the string, escapes included.
      for (i++; i < n; i++) {
        const s = text.charCodeAt(i);
        if (s === 0x5c /* \ */) i++;
        else if (s === 0x22) break;
      }
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > maxDepth) throw tooDeep(where, maxDepth, i);
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      const start = i;
      let integer = true;
      while (i + 1 < n) {
        const d = text.charCodeAt(i + 1);
        if ((d >= 0x30 && d <= 0x39) || d === 0x2d || d === 0x2b) i++;
        else if (d === 0x2e || d === 0x65 || d === 0x45) {
          integer = false;
          i++;
        } else break;
      }
      const token = text.slice(start, i + 1);
      // Short integers are always exact: skip the conversion on the common path.
      if (integer && token.length <= 15) continue;
      const value = Number(token);
      if (Number.isNaN(value)) continue; // not a number token: the parser will say
      if (
        !Number.isFinite(value) ||
        (integer && !Number.isSafeInteger(value)) ||
        (value === 0 && hasNonZeroDigit(token))
      ) {
        throw numberOutOfRange(token, start);
      }
    }
  }
}

/**
 * Checks a JSON value given in process (a library caller's input, a handler's result or
 * progress): nesting depth, without recursion, so that a value too deep for `JSON.stringify`
 * is refused with a clear error instead of a stack overflow. A cycle counts as too deep.
 */
export function checkJsonDepth(
  value: unknown,
  maxDepth = MAX_JSON_DEPTH,
  where = 'The value',
): void {
  if (typeof value !== 'object' || value === null) return;
  // The deepest level each object was reached at: a shared object is walked again only when
  // reached deeper (at most maxDepth times), so a wide graph of shared references stays cheap.
  const seenAt = new Map<object, number>();
  const stack: [object, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop() as [object, number];
    if (depth > maxDepth) throw tooDeep(where, maxDepth);
    if ((seenAt.get(current) ?? 0) >= depth) continue;
    seenAt.set(current, depth);
    const children: unknown[] = Array.isArray(current) ? current : Object.values(current);
    for (const child of children) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
    }
  }
}

/**
 * `JSON.stringify` typed as it behaves: undefined for a value JSON cannot hold (a function, a
 * symbol, undefined itself). Throws as it does (a cycle, a BigInt).
 */
export const jsonText = JSON.stringify as (value: unknown) => string | undefined;
