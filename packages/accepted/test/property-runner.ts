// What the property-based tests share: their settings from the environment (a seed that
// replays a run, a counterexample's path, the number of runs and shrinks) and the run of a
// property that names the seed and the command that replays it when it fails.
import fc from 'fast-check';
import type { PostgresStore } from '../src/store/postgres/postgres-store.ts';
import type { SqliteStore } from '../src/store/sqlite/sqlite-store.ts';
import { STORE, type StorePlace } from './helpers.ts';
import { dropSchema } from './pg-helpers.ts';

/** A store instance playing a node. */
export type PropertyNode = SqliteStore | PostgresStore;

/** Store instances on one place, open: `count` nodes (PostgreSQL), or the only one (SQLite). */
export async function openNodes(place: StorePlace, count: number): Promise<PropertyNode[]> {
  const nodes: PropertyNode[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const store = place.open();
      nodes.push(store);
      await store.open();
    }
  } catch (error) {
    await closeNodes(place, nodes);
    throw error;
  }
  return nodes;
}

/** Closes every node (all of them, whatever fails) and drops the place's schema. */
export async function closeNodes(place: StorePlace, nodes: PropertyNode[]): Promise<void> {
  const errors: unknown[] = [];
  for (const node of nodes.splice(0)) await node.close().catch((e: unknown) => errors.push(e));
  if (place.schema !== null) await dropSchema(place.schema);
  if (errors.length > 0) throw errors[0];
}

export interface PropertySettings {
  /** The environment variables' prefix: `<prefix>_SEED`, `_PATH`, `_REPLAY`, `_RUNS`, `_SHRINKS`. */
  prefix: string;
  seed: number;
  /** A shrunk counterexample's path: run it alone. */
  path: string | undefined;
  /** The commands' `replayPath` of that counterexample (fc.commands needs it with the path). */
  replay: string | undefined;
  /** Multiplies every property's number of runs (e.g. 10 for a soak). */
  runsFactor: number;
  /** Shrink candidates a failure may try (each a whole run on a fresh store). */
  shrinks: number;
}

/** The settings under `prefix` (e.g. `ACCEPTED_PROPERTY`); a random seed unless one is given. */
export function propertySettings(prefix: string, defaultShrinks: number): PropertySettings {
  const env = (name: string) => process.env[`${prefix}_${name}`] || undefined;
  const given = env('SEED');
  let seed = Math.floor(Math.random() * 2 ** 31);
  if (given !== undefined) {
    seed = Number(given);
    if (!Number.isSafeInteger(seed)) {
      throw new Error(`${prefix}_SEED must be an integer (got "${given}")`);
    }
  }
  return {
    prefix,
    seed,
    path: env('PATH'),
    replay: env('REPLAY'),
    runsFactor: Number(env('RUNS') ?? '1') || 1,
    shrinks: Number(env('SHRINKS') ?? '') || defaultShrinks,
  };
}

/**
 * Runs `property` `numRuns` times (times the settings' factor) from the settings' seed, and
 * reports what the runs did (`tally`, by call and outcome) whatever the verdict. A failure is
 * rethrown with the seed and the command that replays it (`file`, the property's `name`).
 */
export async function assertProperty<T>(options: {
  settings: PropertySettings;
  name: string;
  file: string;
  numRuns: { sqlite: number; postgres: number };
  property: fc.IAsyncPropertyWithHooks<T>;
  tally: Map<string, number>;
  diagnostic: (message: string) => void;
}): Promise<void> {
  const { settings, name, file, tally, diagnostic } = options;
  const numRuns = Math.max(1, Math.round(options.numRuns[STORE] * settings.runsFactor));
  diagnostic(`seed ${settings.seed}, ${numRuns} runs on ${STORE}`);
  tally.clear();
  try {
    await fc.assert(options.property, {
      seed: settings.seed,
      numRuns,
      // A path replays that counterexample alone, as it was shrunk.
      ...(settings.path !== undefined ? { path: settings.path, endOnFailure: true } : {}),
      includeErrorInReport: true,
    });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(
      `Property "${name}" failed on ${STORE} with seed ${settings.seed}.\n` +
        `Replay: ${settings.prefix}_SEED=${settings.seed} ACCEPTED_TEST_STORE=${STORE} ` +
        `node --import tsx --test --test-name-pattern '${name}' packages/accepted/test/${file}\n` +
        `(to run the shrunk counterexample alone, add ${settings.prefix}_PATH=<path>, and ` +
        `${settings.prefix}_REPLAY=<replayPath> where the counterexample has one, both below)\n` +
        message,
      { cause: error },
    );
  } finally {
    const calls = [...tally].sort(([a], [b]) => a.localeCompare(b));
    diagnostic(`calls: ${calls.map(([k, n]) => `${k} ${n}`).join(', ')}`);
  }
}

/**
 * Some order of calls made at once that explains them: each call, applied to the model in that
 * order, is answered as the store answered it (`step` gives the models that follow, or why the
 * call cannot be answered so), and the model at the end satisfies `finish` (no differences).
 * The model after them, or the error of the order that went furthest.
 */
export function searchOrders<M, C>(options: {
  start: M;
  calls: readonly C[];
  step: (model: M, call: C) => readonly M[] | string;
  label: (call: C) => string;
  finish: (model: M) => string[];
}): { model: M } | { error: string } {
  const { calls, step, label, finish } = options;
  let deepest = { depth: -1, error: 'no order of the calls explains the answers' };
  const search = (model: M, left: number[], path: string[]): M | null => {
    if (left.length === 0) {
      const differences = finish(model);
      if (differences.length === 0) return model;
      if (path.length >= deepest.depth) {
        deepest = {
          depth: path.length,
          error: `in the order ${path.join(' ; ')}, the state differs: ${differences.slice(0, 8).join('; ')}`,
        };
      }
      return null;
    }
    for (const i of left) {
      const call = calls[i] as C;
      const next = step(model, call);
      if (typeof next === 'string') {
        if (path.length > deepest.depth) {
          deepest = {
            depth: path.length,
            error: `after ${path.length > 0 ? path.join(' ; ') : 'nothing'}: ${label(call)} ${next}`,
          };
        }
        continue;
      }
      for (const candidate of next) {
        const found = search(
          candidate,
          left.filter((j) => j !== i),
          [...path, label(call)],
        );
        if (found) return found;
      }
    }
    return null;
  };
  const found = search(
    options.start,
    calls.map((_, i) => i),
    [],
  );
  return found ? { model: found } : { error: deepest.error };
}
