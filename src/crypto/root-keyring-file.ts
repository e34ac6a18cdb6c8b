/** Where the managed root keyring comes from: CUSTOS_ROOT_KEYS, or a local key file generated on first start. */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { ConfigError, type Config } from '../config/config.js';
import { RootKeyring } from '../common/root-keyring.js';

export function loadRootKeyring(config: Config, log: Logger): RootKeyring {
  if (config.rootKeys) return parseOrConfigError(config.rootKeys, 'CUSTOS_ROOT_KEYS is invalid');
  const file = path.join(config.dataDir, 'root-keys');
  let spec: string;
  try {
    if (!fs.existsSync(file)) {
      fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
      fs.writeFileSync(file, RootKeyring.generateSpec() + '\n', { mode: 0o600, flag: 'wx' });
      fs.chmodSync(file, 0o600);
    }
    const mode = fs.statSync(file).mode & 0o777;
    if (mode & 0o077) fs.chmodSync(file, 0o600);
    spec = fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    // An unwritable or unreadable data folder is the operator's to fix, like a bad variable.
    const code = (err as { code?: unknown }).code;
    throw new ConfigError(
      `CUSTOS_DATA_DIR: the root key file ${file} cannot be created or read (${typeof code === 'string' ? code : 'error'})`,
    );
  }
  log.warn(
    { file },
    'USING A LOCAL ROOT KEY FROM THE DATA FOLDER: for local use only. Anyone who can read this file can decrypt ' +
      'every stored credential, and losing it loses them all. Set CUSTOS_ROOT_KEYS (or a BYOK backend) in production.',
  );
  return parseOrConfigError(spec, `The root key file ${file} is invalid`);
}

/** A bad keyring is a configuration error: reported in one line naming its source, never its content. */
function parseOrConfigError(spec: string, what: string): RootKeyring {
  try {
    return RootKeyring.parse(spec);
  } catch (err) {
    throw new ConfigError(`${what}: ${(err as Error).message.replace(/^CUSTOS_ROOT_KEYS:? ?/, '')}`);
  }
}
