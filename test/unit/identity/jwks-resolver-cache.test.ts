/**
 * JwksResolver's fetched key sets: at most 1000 URIs are remembered, the least recently used forgotten
 * first, and a set is never dropped for its age alone (a stale set keeps verifying while its issuer's key
 * endpoint is down). The fetches go to a stand-in for the outbound client that counts them.
 */
import { exportJWK, generateKeyPair, type FlattenedJWSInput } from 'jose';
import pino from 'pino';
import { JwksResolver } from '../../../src/identity/jwks-resolver.js';
import type { OutboundHttpClient } from '../../../src/common/outbound-http.js';

const MAX_URIS = 1000;
const FRESH_MS = 10 * 60_000;
const START = Date.parse('2030-01-01T00:00:00Z');

let jwksBody: Buffer;
let status: number;
let requested: string[];
let resolver: JwksResolver;

const uri = (i: number) => `https://issuer-${i}.example.test/jwks.json`;
const token = { payload: '', signature: '' } as FlattenedJWSInput;
const keyFrom = (i: number) =>
  resolver.keyGetter({ jwks: null, jwksUri: uri(i) })({ alg: 'ES256', kid: 'k1' }, token);

beforeAll(async () => {
  const { publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  jwksBody = Buffer.from(JSON.stringify({ keys: [jwk] }));
});

beforeEach(() => {
  status = 200;
  requested = [];
  jest.spyOn(Date, 'now').mockReturnValue(START);
  const outbound = {
    request: async (url: string) => {
      requested.push(url);
      return { status, headers: {}, body: status === 200 ? jwksBody : Buffer.from('{}'), url };
    },
  } as unknown as OutboundHttpClient;
  resolver = new JwksResolver(outbound, pino({ enabled: false }));
});

afterEach(() => {
  jest.restoreAllMocks();
});

describe('JwksResolver key-set cache', () => {
  it('remembers at most 1000 key-set URIs and forgets the least recently used first', async () => {
    for (let i = 0; i < MAX_URIS; i++) await expect(keyFrom(i)).resolves.toBeDefined();
    expect(resolver.fetches).toBe(MAX_URIS);
    // Used again, so URI 1 is now the least recently used.
    await keyFrom(0);
    expect(resolver.fetches).toBe(MAX_URIS);

    await keyFrom(MAX_URIS);
    expect(resolver.fetches).toBe(MAX_URIS + 1);
    await keyFrom(0);
    await keyFrom(2);
    expect(resolver.fetches).toBe(MAX_URIS + 1);
    await expect(keyFrom(1)).resolves.toBeDefined();
    expect(resolver.fetches).toBe(MAX_URIS + 2);
    expect(requested.filter((u) => u === uri(1))).toHaveLength(2);
  });

  it('keeps verifying with a stale set while the issuer cannot serve a fresh one', async () => {
    await expect(keyFrom(0)).resolves.toBeDefined();
    jest.spyOn(Date, 'now').mockReturnValue(START + FRESH_MS + 1);
    status = 503;
    await expect(keyFrom(0)).resolves.toBeDefined();
    expect(resolver.fetches).toBe(2);
    // Within the cooldown the failed fetch is not repeated.
    await expect(keyFrom(0)).resolves.toBeDefined();
    expect(resolver.fetches).toBe(2);
  });
});
