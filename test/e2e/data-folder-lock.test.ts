/**
 * One owner per data folder: while Custos runs on the embedded default, a second start on the same folder
 * (a second `npm start`, or `migrate`, which opens the database the same way) is refused with a message
 * naming the folder, and the running server keeps its database.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { startCustos } from '../../src/bootstrap.js';
import { createLogger } from '../../src/common/logger.js';
import { loadConfig } from '../../src/config/config.js';
import { DataFolderInUseError } from '../../src/database/embedded-postgres.js';

const quiet = () =>
  createLogger(
    'warn',
    new Writable({
      write(_c, _e, cb) {
        cb();
      },
    }),
  );

describe('the data folder lock', () => {
  it('refuses a second start on a folder in use and leaves the running server serving', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-lock-'));
    const env = { CUSTOS_DATA_DIR: dataDir, PORT: '0', CUSTOS_LOG_LEVEL: 'warn' };
    const first = await startCustos({ config: loadConfig(env), logger: quiet(), listen: false });
    try {
      const second = startCustos({ config: loadConfig(env), logger: quiet(), listen: false });
      await expect(second).rejects.toBeInstanceOf(DataFolderInUseError);
      await expect(second).rejects.toThrow(dataDir);

      const fastify = first.app.getHttpAdapter().getInstance();
      const ready = await fastify.inject({ method: 'GET', url: '/readyz' });
      expect(ready.statusCode).toBe(200);
      const [row] = await first.runtime.dataSource.query<{ n: number }[]>('SELECT 1 AS n');
      expect(row.n).toBe(1);
    } finally {
      await first.close();
    }

    // Once the owner has stopped, the folder is free again at once.
    const again = await startCustos({ config: loadConfig(env), logger: quiet(), listen: false });
    await again.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }, 120_000);
});
