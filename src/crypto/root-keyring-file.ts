/** Where the managed root keyring comes from: CUSTOS_ROOT_KEYS, or a local key file generated on first start. */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { RootKeyring } from './root-keyring.js';

export function loadRootKeyring(config: Config, log: Logger): RootKeyring {
  if (config.rootKeys) return RootKeyring.parse(config.rootKeys);
  const file = path.join(config.dataDir, 'root-keys');
  if (!fs.existsSync(file)) {
    fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(file, RootKeyring.generateSpec() + '\n', { mode: 0o600, flag: 'wx' });
    fs.chmodSync(file, 0o600);
  }
  const mode = fs.statSync(file).mode & 0o777;
  if (mode & 0o077) fs.chmodSync(file, 0o600);
  log.warn(
    { file },
    'USING A LOCAL ROOT KEY FROM THE DATA FOLDER: for local use only. Anyone who can read this file can decrypt ' +
      'every stored credential, and losing it loses them all. Set CUSTOS_ROOT_KEYS (or a BYOK backend) in production.',
  );
  return RootKeyring.parse(fs.readFileSync(file, 'utf8').trim());
}
