/**
 * The token endpoint's cache of connector registrations: a hit costs no lookup, an entry lives 30 s, at most
 * 10 000 are kept with the least recently used going first, and neither unknown ids nor disabled
 * registrations are served from it. The secret check is the real one; only the registrations come from a
 * fixed list instead of PostgreSQL, with the lookups counted.
 */
import {
  ClientAuthenticator,
  ClientAuthError,
  type ClientAuthInput,
} from '../../../src/identity/client-auth.js';
import type { JwksResolver } from '../../../src/identity/jwks-resolver.js';
import type { Config } from '../../../src/config/config.js';
import { hashKey } from '../../../src/identity/admin-keys.service.js';
import type { ConnectorCredentials, ConnectorsService } from '../../../src/identity/connectors.service.js';

const TENANT = '00000000-0000-4000-8000-000000000001';
const CACHE_MS = 30_000;
const CACHE_MAX = 10_000;

let registrations: Map<string, ConnectorCredentials>;
let lookups: number;
let clients: ClientAuthenticator;
/** The clock the cache reads (performance.now); Date is left alone. */
let now: number;

const clientId = (i: number) => `cus_ci_${String(i).padStart(22, '0')}`;
const secretOf = (id: string) => `cus_cs_secret-of-${id}`;

function register(id: string, overrides: Partial<ConnectorCredentials> = {}): ConnectorCredentials {
  const creds: ConnectorCredentials = {
    connectorId: `connector-${id}`,
    tenantId: TENANT,
    clientId: id,
    name: 'Docs MCP',
    owner: null,
    delegation: 'user_token',
    authMethod: 'client_secret_basic',
    allowedProviders: ['github'],
    allowedScopes: {},
    jwks: null,
    jwksUri: null,
    secretHash: hashKey(secretOf(id)),
    version: 1,
    disabled: false,
    ...overrides,
  };
  registrations.set(id, creds);
  return creds;
}

const basic = (id: string, secret = secretOf(id)): ClientAuthInput => ({
  authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`,
  clientId: undefined,
  clientSecret: undefined,
  clientAssertion: undefined,
  clientAssertionType: undefined,
});

/** The refusal's reason, or 'ok'. */
async function outcome(input: ClientAuthInput): Promise<string> {
  try {
    await clients.authenticate(input);
    return 'ok';
  } catch (err) {
    if (err instanceof ClientAuthError) return err.reason;
    throw err;
  }
}

beforeEach(() => {
  registrations = new Map();
  lookups = 0;
  now = 1_000_000;
  jest.spyOn(performance, 'now').mockImplementation(() => now);
  const connectors = {
    credentialsByClientId: async (id: string) => {
      lookups++;
      return registrations.get(id) ?? null;
    },
  } as unknown as ConnectorsService;
  clients = new ClientAuthenticator(
    connectors,
    {} as JwksResolver,
    {
      publicUrl: 'https://custos.example.test',
    } as Config,
  );
});

afterEach(() => {
  jest.restoreAllMocks();
});

describe('ClientAuthenticator registration cache', () => {
  it('serves a registration without a lookup for 30 s, then reads it again', async () => {
    register(clientId(1));
    expect(await outcome(basic(clientId(1)))).toBe('ok');
    expect(await outcome(basic(clientId(1)))).toBe('ok');
    expect(lookups).toBe(1);
    now += CACHE_MS - 1;
    expect(await outcome(basic(clientId(1)))).toBe('ok');
    expect(lookups).toBe(1);
    now += 2;
    expect(await outcome(basic(clientId(1)))).toBe('ok');
    expect(lookups).toBe(2);
  });

  it('reads a disabled registration on every request, so enabling it takes effect at once', async () => {
    register(clientId(1), { disabled: true });
    expect(await outcome(basic(clientId(1)))).toBe('disabled');
    expect(await outcome(basic(clientId(1)))).toBe('disabled');
    expect(lookups).toBe(2);
    register(clientId(1));
    expect(await outcome(basic(clientId(1)))).toBe('ok');
    expect(lookups).toBe(3);
  });

  it('checks a secret that does not match the cached hash against a fresh read (a rotated secret)', async () => {
    register(clientId(1));
    expect(await outcome(basic(clientId(1)))).toBe('ok');
    register(clientId(1), { secretHash: hashKey('cus_cs_rotated'), version: 2 });
    expect(await outcome(basic(clientId(1), 'cus_cs_rotated'))).toBe('ok');
    expect(lookups).toBe(2);
    expect(await outcome(basic(clientId(1)))).toBe('bad_secret');
  });

  it('forgets a registration when asked to', async () => {
    register(clientId(1));
    expect(await outcome(basic(clientId(1)))).toBe('ok');
    clients.forget(clientId(1));
    expect(await outcome(basic(clientId(1)))).toBe('ok');
    expect(lookups).toBe(2);
  });

  it('keeps at most 10 000 registrations and evicts the least recently used first', async () => {
    for (let i = 0; i <= CACHE_MAX; i++) register(clientId(i));
    for (let i = 0; i < CACHE_MAX; i++) expect(await outcome(basic(clientId(i)))).toBe('ok');
    expect(lookups).toBe(CACHE_MAX);
    // Used again, so client 1 is now the least recently used.
    expect(await outcome(basic(clientId(0)))).toBe('ok');
    expect(lookups).toBe(CACHE_MAX);

    expect(await outcome(basic(clientId(CACHE_MAX)))).toBe('ok');
    expect(lookups).toBe(CACHE_MAX + 1);
    expect(await outcome(basic(clientId(0)))).toBe('ok');
    expect(await outcome(basic(clientId(2)))).toBe('ok');
    expect(lookups).toBe(CACHE_MAX + 1);
    expect(await outcome(basic(clientId(1)))).toBe('ok');
    expect(lookups).toBe(CACHE_MAX + 2);
  });

  it('does not cache unknown client ids, so a flood of made-up ids pushes out no real one', async () => {
    register(clientId(0));
    expect(await outcome(basic(clientId(0)))).toBe('ok');
    for (let i = 1; i <= CACHE_MAX; i++) expect(await outcome(basic(clientId(i)))).toBe('unknown_client');
    expect(await outcome(basic(clientId(1)))).toBe('unknown_client');
    expect(lookups).toBe(CACHE_MAX + 2);
    expect(await outcome(basic(clientId(0)))).toBe('ok');
    expect(lookups).toBe(CACHE_MAX + 2);
  });
});
