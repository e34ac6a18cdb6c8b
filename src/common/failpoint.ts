/**
 * Tests only (`CUSTOS_TEST_FAILPOINTS`): named points where a process stops dead, so that a fault test can kill -9
 * it at exactly that point. Never configured in production; unconfigured, a failpoint costs one array lookup.
 */
import type { Logger } from 'pino';

/** The failpoints a process stops at: `refresh.after-provider`, `token.after-audit`, ... (see config.ts). */
export type FailpointName =
  | 'refresh.after-provider'
  | 'token.after-audit'
  | 'import.after-commit'
  | 'key-migration.before-write'
  | 'start.after-embedded-postgres';

/** Passes so far per failpoint, per configuration (two apps in one test process count apart). */
const passes = new WeakMap<readonly string[], Map<string, number>>();

/**
 * Returns at once unless `name` is configured. Configured as `name`, every pass stops; as `name@N`, the first N-1
 * passes go through and every pass from the Nth on stops (so a load can warm up before the process dies). A stopped
 * pass logs `failpoint reached` and never resolves; the rest of the process runs on until the test kills it.
 */
export async function failpoint(
  configured: readonly string[],
  log: Logger,
  name: FailpointName,
  context: Record<string, unknown> = {},
): Promise<void> {
  if (configured.length === 0) return;
  const entry = configured.find((f) => f === name || f.startsWith(`${name}@`));
  if (entry === undefined) return;
  const at = entry === name ? 1 : Number(entry.slice(name.length + 1));
  let counts = passes.get(configured);
  if (!counts) passes.set(configured, (counts = new Map<string, number>()));
  const pass = (counts.get(name) ?? 0) + 1;
  counts.set(name, pass);
  if (pass < at) return;
  log.warn({ failpoint: name, pass, ...context }, 'failpoint reached');
  await new Promise<never>(() => undefined);
}
