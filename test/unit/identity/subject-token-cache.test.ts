/**
 * The token endpoint's verified-token cache: a hit costs no signature check, but a token is never served
 * from the cache past its own `exp` (wall-clock time, whatever the cache's clock says), and a changed provider
 * drops its own verifications only. The verification is the real one (jose, inline JWK Set through
 * JwksResolver); only the provider registrations come from a fixed list instead of PostgreSQL.
 */
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import pino from 'pino';
import { SubjectTokenError, SubjectTokenVerifier } from '../../../src/identity/subject-token.js';
import { JwksResolver } from '../../../src/identity/jwks-resolver.js';
import type { OutboundHttpClient } from '../../../src/common/outbound-http.js';
import type {
  IdentityProvidersService,
  IdentityProviderView,
} from '../../../src/identity/identity-providers.service.js';

const TENANT = '00000000-0000-4000-8000-000000000001';
const START = Date.parse('2030-01-01T00:00:00Z');
const ISSUERS = ['https://one.example.test/', 'https://two.example.test/'];

let key: CryptoKey;
let providers: IdentityProviderView[];
let verifier: SubjectTokenVerifier;

beforeAll(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true });
  key = pair.privateKey;
  const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' as const, use: 'sig' };
  providers = ISSUERS.map((issuer, i) => ({
    name: `idp-${i}`,
    issuer,
    jwksUri: null,
    jwks: { keys: [{ ...publicJwk, kty: 'EC' as const }] },
    audiences: ['custos'],
    userClaim: 'sub',
    algorithms: ['ES256'],
    createdAt: new Date(START).toISOString(),
    updatedAt: new Date(START).toISOString(),
  }));
});

beforeEach(() => {
  jest.useFakeTimers({ now: START, doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
  const store = {
    findByIssuer: async (_tenantId: string, issuer: string) =>
      providers.find((p) => p.issuer === issuer) ?? null,
  } as unknown as IdentityProvidersService;
  const jwks = new JwksResolver({} as OutboundHttpClient, pino({ enabled: false }));
  verifier = new SubjectTokenVerifier(store, jwks);
});

afterEach(() => {
  jest.useRealTimers();
});

const sign = (claims: JWTPayload) => {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ aud: 'custos', sub: 'alice', iat: now, ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .sign(key);
};

describe('SubjectTokenVerifier cache', () => {
  it('serves a token from the cache until its exp, then verifies it again, then refuses it', async () => {
    const exp = START / 1000 + 60;
    const token = await sign({ iss: ISSUERS[0], exp });
    expect((await verifier.verify(TENANT, token)).expiresAt).toBe(exp * 1000);
    expect((await verifier.verify(TENANT, token)).userId).toBe('alice');
    expect(verifier.verifications).toBe(1);
    // Past exp but within the clock tolerance: still valid, but verified again rather than served.
    jest.setSystemTime(START + 61_000);
    expect((await verifier.verify(TENANT, token)).userId).toBe('alice');
    expect(verifier.verifications).toBe(2);
    jest.setSystemTime(START + 100_000);
    const refused = await verifier.verify(TENANT, token).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(SubjectTokenError);
    expect((refused as SubjectTokenError).reason).toBe('expired');
    expect(verifier.verifications).toBe(3);
  });

  it('forgets the verifications of one issuer when it changes, and keeps the others', async () => {
    const exp = START / 1000 + 300;
    const one = await sign({ iss: ISSUERS[0], exp });
    const two = await sign({ iss: ISSUERS[1], exp });
    await verifier.verify(TENANT, one);
    await verifier.verify(TENANT, two);
    expect(verifier.verifications).toBe(2);
    verifier.invalidateIssuer(TENANT, ISSUERS[0]);
    await verifier.verify(TENANT, one);
    await verifier.verify(TENANT, two);
    expect(verifier.verifications).toBe(3);
  });

  it('keeps a token verified for one tenant from being served to another', async () => {
    const token = await sign({ iss: ISSUERS[0], exp: START / 1000 + 300 });
    await verifier.verify(TENANT, token);
    await verifier.verify('00000000-0000-4000-8000-000000000002', token);
    expect(verifier.verifications).toBe(2);
  });
});
