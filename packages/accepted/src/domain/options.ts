// Options of the library and of `accepted serve`: one grammar for durations and sizes, one
// check of a number against its bounds, and one error (`ConfigError`) for an option that is
// wrong. A bad option is a mistake of whoever configures the server, not of a client: it has
// no HTTP status, and it names the option (`leaseMs`), which the CLI turns into its flag.

/** An option given a value it cannot take. `option` is its name in the library's terms. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly option: string,
    message: string,
    readonly fix?: string,
  ) {
    super(message);
  }
}

export function isConfigError(value: unknown): value is ConfigError {
  return value instanceof ConfigError;
}

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
type DurationUnit = keyof typeof DURATION_UNITS;

/**
 * The one duration grammar: a number and a unit, `500ms`, `15s`, `1.5m`, `2h`, `5d`. Where
 * `bare` is given, a number alone counts in that unit (the CLI reads `--heartbeat 15` as
 * seconds). Whole milliseconds, or null when the text is not a duration.
 */
export function parseDuration(text: string, bare?: DurationUnit): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)(ms|s|m|h|d)?\s*$/.exec(text);
  if (!match) return null;
  const unit = (match[2] as DurationUnit | undefined) ?? bare;
  if (unit === undefined) return null;
  const ms = Math.round(Number(match[1]) * DURATION_UNITS[unit]);
  return Number.isSafeInteger(ms) ? ms : null;
}

/** A duration for people: `500ms`, `15s`, `2m`, `1h`, `5d` (the largest whole unit). */
export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = DURATION_UNITS[unit];
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 * 1024,
  mb: 1024 * 1024,
  mib: 1024 * 1024,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/** A size in bytes: a whole number, or with a unit (`512kb`, `4mb`; 1 kb = 1024 bytes). */
export function parseSize(text: string): number | null {
  const match = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(text);
  const unit = SIZE_UNITS[(match?.[2] ?? '').toLowerCase()];
  const n = match && unit !== undefined ? Number(match[1]) * unit : NaN;
  return Number.isSafeInteger(n) ? n : null;
}

/** How a numeric option is written and bounded. */
export interface NumberSpec {
  kind: 'int' | 'duration' | 'size';
  min: number;
  max: number;
  /** For a duration: the unit of a plain number (default seconds). */
  bare?: 'ms' | 's';
}

/** `15s` for a duration, `1mb` for a size, the number itself for a count. */
export function describeValue(kind: NumberSpec['kind'], n: number): string {
  if (kind === 'duration') return formatDuration(n);
  if (kind === 'size') {
    for (const [unit, size] of [
      ['gb', 1024 ** 3],
      ['mb', 1024 ** 2],
      ['kb', 1024],
    ] as const) {
      if (n >= size && n % size === 0) return `${n / size}${unit}`;
    }
  }
  return String(n);
}

/** What a value of this spec must be, for an error message: "a duration from 10ms to 1h". */
export function describeRange(spec: NumberSpec): string {
  const from = describeValue(spec.kind, spec.min);
  const to = describeValue(spec.kind, spec.max);
  if (spec.kind === 'duration') return `a duration from ${from} to ${to}, such as 500ms, 15s or 1m`;
  if (spec.kind === 'size') return `a size from ${from} to ${to}, such as 65536, 512kb or 4mb`;
  return `a whole number from ${from} to ${to}`;
}

/**
 * A numeric option checked against its bounds: `undefined` gives the default. A text (from a
 * flag or the environment) is parsed by the spec's grammar first; a plain number given to a
 * duration flag counts as seconds.
 */
export function checkNumber(
  option: string,
  spec: NumberSpec,
  value: number | string | undefined,
  fallback: number,
): number {
  if (value === undefined || value === '') return fallback;
  const n =
    typeof value === 'number'
      ? value
      : spec.kind === 'duration'
        ? parseDuration(value, spec.bare ?? 's')
        : spec.kind === 'size'
          ? parseSize(value)
          : /^\s*-?\d+\s*$/.test(value)
            ? Number(value)
            : null;
  if (n === null || !Number.isSafeInteger(n) || n < spec.min || n > spec.max) {
    throw new ConfigError(
      option,
      `${option} must be ${describeRange(spec)} (got ${typeof value === 'string' ? `"${value}"` : String(value)})`,
    );
  }
  return n;
}
