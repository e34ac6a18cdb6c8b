/**
 * The token endpoint's opened-secret cache (ConnectionsService.openSecret): a hit skips the data-key lookup
 * and the decryption, but only for the same tenant and the same envelope, only while the data key is itself
 * cached, and never longer than the data-key cache's age or 5 minutes; at most 10 000 entries are kept, the
 * least recently used going first. Envelopes are sealed and opened for real; only the data keys come from a
 * stand-in for DataKeyService that counts lookups.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { DataSource } from 'typeorm';
import type { Logger } from 'pino';
import type { AuditService } from '../../../src/audit/audit.service.js';
import type { Config } from '../../../src/config/config.js';
import { ConnectionsService } from '../../../src/connections/connections.service.js';
import type { ConnectionsRepository } from '../../../src/connections/connections.repository.js';
import type { PendingRevocationsRepository } from '../../../src/connections/pending-revocations.repository.js';
import type { DataKeyService } from '../../../src/crypto/data-key.service.js';
import { sealField } from '../../../src/crypto/envelope.js';
import type { RefreshJobs } from '../../../src/jobs/refresh-jobs.js';
import type { ProviderRegistry } from '../../../src/providers/provider-registry.js';

const TENANT = randomUUID();
const OTHER_TENANT = randomUUID();
const DATA_KEY_ID = randomUUID();
const DATA_KEY = randomBytes(32);
const MAX_ENTRIES = 10_000;

let keyLookups: number;
let dataKeyCached: boolean;
/** The clock the cache reads (performance.now). */
let now: number;

const seal = (connectionId: string, secret: string, tenantId = TENANT) =>
  sealField(
    DATA_KEY,
    { tenantId, scope: 'connection', recordId: connectionId, field: 'api_key', dataKeyId: DATA_KEY_ID },
    Buffer.from(secret, 'utf8'),
  );

function service(dataKeyCacheTtlSeconds = 300): ConnectionsService {
  const dataKeys = {
    keyById: async (_tenantId: string, dataKeyId: string) => {
      keyLookups++;
      if (dataKeyId !== DATA_KEY_ID) throw new Error('unknown data key');
      return DATA_KEY;
    },
    isCached: (_tenantId: string, dataKeyId: string) => dataKeyCached && dataKeyId === DATA_KEY_ID,
  } as unknown as DataKeyService;
  return new ConnectionsService(
    {} as DataSource,
    {} as ConnectionsRepository,
    {} as PendingRevocationsRepository,
    {} as AuditService,
    dataKeys,
    {} as ProviderRegistry,
    { dataKeyCacheTtlSeconds } as Config,
    {} as RefreshJobs,
    {} as Logger,
  );
}

beforeEach(() => {
  keyLookups = 0;
  dataKeyCached = true;
  now = 1_000_000;
  jest.spyOn(performance, 'now').mockImplementation(() => now);
});

afterEach(() => {
  jest.restoreAllMocks();
});

describe('ConnectionsService.openSecret cache', () => {
  it('serves a secret again without opening it, for the same tenant and envelope only', async () => {
    const connections = service();
    const id = randomUUID();
    const envelope = seal(id, 'sk-first');
    expect(await connections.openSecret(TENANT, id, 'api_key', envelope)).toBe('sk-first');
    expect(await connections.openSecret(TENANT, id, 'api_key', Buffer.from(envelope))).toBe('sk-first');
    expect(keyLookups).toBe(1);

    // A replaced credential has a new envelope.
    const replaced = seal(id, 'sk-second');
    expect(await connections.openSecret(TENANT, id, 'api_key', replaced)).toBe('sk-second');
    expect(keyLookups).toBe(2);

    // Another tenant naming the same connection id is never answered from the cache.
    await expect(connections.openSecret(OTHER_TENANT, id, 'api_key', replaced)).rejects.toMatchObject({
      code: 'decryption_failed',
    });
    expect(keyLookups).toBe(3);
  });

  it('opens again once the data key has left the data-key cache', async () => {
    const connections = service();
    const id = randomUUID();
    const envelope = seal(id, 'sk-first');
    await connections.openSecret(TENANT, id, 'api_key', envelope);
    dataKeyCached = false;
    expect(await connections.openSecret(TENANT, id, 'api_key', envelope)).toBe('sk-first');
    expect(keyLookups).toBe(2);
  });

  it('keeps a secret no longer than the data-key cache age', async () => {
    const connections = service(60);
    const id = randomUUID();
    const envelope = seal(id, 'sk-first');
    await connections.openSecret(TENANT, id, 'api_key', envelope);
    now += 60_000 - 1;
    await connections.openSecret(TENANT, id, 'api_key', envelope);
    expect(keyLookups).toBe(1);
    now += 2;
    await connections.openSecret(TENANT, id, 'api_key', envelope);
    expect(keyLookups).toBe(2);
  });

  it('keeps a secret at most 5 minutes however long data keys are cached', async () => {
    const connections = service(3600);
    const id = randomUUID();
    const envelope = seal(id, 'sk-first');
    await connections.openSecret(TENANT, id, 'api_key', envelope);
    now += 5 * 60_000 - 1;
    await connections.openSecret(TENANT, id, 'api_key', envelope);
    expect(keyLookups).toBe(1);
    now += 2;
    await connections.openSecret(TENANT, id, 'api_key', envelope);
    expect(keyLookups).toBe(2);
  });

  it('keeps nothing when data keys are not cached (CUSTOS_DATA_KEY_CACHE_TTL_SECONDS=0)', async () => {
    const connections = service(0);
    const id = randomUUID();
    const envelope = seal(id, 'sk-first');
    for (let i = 0; i < 3; i++)
      expect(await connections.openSecret(TENANT, id, 'api_key', envelope)).toBe('sk-first');
    expect(keyLookups).toBe(3);
  });

  it('keeps at most 10 000 secrets and evicts the least recently used first', async () => {
    const connections = service();
    const ids = Array.from({ length: MAX_ENTRIES + 1 }, () => randomUUID());
    const envelopes = ids.map((id, i) => seal(id, `sk-${i}`));
    const open = (i: number) => connections.openSecret(TENANT, ids[i], 'api_key', envelopes[i]);
    for (let i = 0; i < MAX_ENTRIES; i++) await open(i);
    expect(keyLookups).toBe(MAX_ENTRIES);
    // Used again, so entry 1 is now the least recently used.
    expect(await open(0)).toBe('sk-0');
    expect(keyLookups).toBe(MAX_ENTRIES);

    await open(MAX_ENTRIES);
    expect(keyLookups).toBe(MAX_ENTRIES + 1);
    expect(await open(0)).toBe('sk-0');
    expect(await open(2)).toBe('sk-2');
    expect(keyLookups).toBe(MAX_ENTRIES + 1);
    expect(await open(1)).toBe('sk-1');
    expect(keyLookups).toBe(MAX_ENTRIES + 2);
  });
});
