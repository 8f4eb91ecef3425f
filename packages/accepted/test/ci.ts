// Whether this run is CI, where every suite must run: a missing service or browser is then a
// failure, never a skip. Any value of CI but empty, `false` and `0` counts (CI systems set
// `true`, `1` or their own name); scripts/test.mjs reads it the same way.
export const IN_CI = isCi(process.env.CI);

export function isCi(value: string | undefined): boolean {
  return value !== undefined && !['', 'false', '0'].includes(value.trim().toLowerCase());
}
