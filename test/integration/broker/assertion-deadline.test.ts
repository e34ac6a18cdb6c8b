/**
 * A private_key_jwt token exchange reads its decision in a statement of its own (it records the assertion's
 * jti in the same statement), outside the batchers. In a silent partition it must still answer 503 within the
 * batch deadline (CUSTOS_DB_BATCH_TIMEOUT_MS), not after the much longer statement timeout, and recover.
 */
import { randomUUID } from 'node:crypto';
import { adminDatabaseUrl, databaseUrlFor, workerDatabaseName } from '../../support/env.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import {
  createKeyedConnector,
  createTenant,
  importConnection,
  uniqueSecret,
} from '../../support/factories.js';
import { newSigningKey, signJwt, type SigningKey } from '../../support/idp.js';
import { startTcpProxy, type TcpProxy } from '../../support/tcp-proxy.js';

const PUBLIC_URL = 'https://custos.example.test';
/** Far apart, so which one bounded the answer is plain: well under the statement timeout means the deadline. */
const BATCH_DEADLINE_MS = 1000;
const STATEMENT_TIMEOUT_MS = 120_000;
const ANSWERED_WITHIN_MS = 30_000;

let proxy: TcpProxy;
let app: TestApp;
let key: SigningKey;
let clientId: string;
const apiKey = uniqueSecret('sk');

async function exchange() {
  const now = Math.floor(Date.now() / 1000);
  const assertion = await signJwt(key, {
    iss: clientId,
    sub: clientId,
    aud: `${PUBLIC_URL}/oauth/token`,
    jti: randomUUID(),
    iat: now,
    exp: now + 60,
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      app.request('POST', '/oauth/token', {
        payload: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: 'alice',
          subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
          audience: 'openai',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: assertion,
        }).toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error('not answered within the batch deadline')),
          ANSWERED_WITHIN_MS,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

beforeAll(async () => {
  const u = new URL(adminDatabaseUrl);
  proxy = await startTcpProxy(u.hostname, Number(u.port || 5432));
  const viaProxy = new URL(databaseUrlFor(workerDatabaseName()));
  viaProxy.port = String(proxy.port);
  app = await startTestApp({
    DATABASE_URL: viaProxy.toString(),
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_DB_CONNECT_TIMEOUT_MS: String(BATCH_DEADLINE_MS),
    CUSTOS_DB_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS),
    CUSTOS_DB_BATCH_TIMEOUT_MS: String(BATCH_DEADLINE_MS),
  });
  const t = await createTenant(app);
  key = await newSigningKey();
  ({ clientId } = await createKeyedConnector(app, t, key, { name: 'jwt', allowedProviders: ['openai'] }));
  await importConnection(app, t, 'alice', 'openai', { type: 'api_key', apiKey });
});

afterAll(async () => {
  proxy.restore();
  await app?.close();
  await proxy.close();
});

it('answers 503 within the batch deadline during a silent partition, and recovers', async () => {
  expect((await exchange()).body.access_token).toBe(apiKey);
  proxy.blackhole();
  const during = await Promise.all(Array.from({ length: 3 }, () => exchange()));
  for (const res of during) {
    expect(res.status).toBe(503);
    expect(res.body.error).toBe('temporarily_unavailable');
    expect(res.headers['retry-after']).toBeDefined();
  }
  proxy.restore();
  let after = await exchange().catch(() => undefined);
  for (let i = 0; i < 60 && after?.status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 500));
    after = await exchange().catch(() => undefined);
  }
  expect(after?.body.access_token).toBe(apiKey);
}, 120_000);
