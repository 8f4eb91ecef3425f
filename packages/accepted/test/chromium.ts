// Debian's Chromium driven by playwright-core (never a downloaded browser), as every browser
// test launches it: skipped on a developer machine without it, a failure in CI.
import fs from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { IN_CI } from './ci.ts';

const CHROMIUM = '/usr/bin/chromium';
// Playwright gives every launch a fresh, empty user data dir of its own.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const MISSING = `Chromium is not installed at ${CHROMIUM}: install the Debian package (apt-get install chromium); .ci/run installs it in CI.`;
const haveChromium = fs.existsSync(CHROMIUM);

/** The `skip` of a browser suite: the reason on a machine without Chromium, unless in CI. */
export const skipWithoutChromium: string | false = !haveChromium && !IN_CI ? MISSING : false;

/** Launches Chromium headless; throws (CI) when it is missing. */
export async function launchChromium(): Promise<Browser> {
  if (!haveChromium) throw new Error(MISSING);
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}
