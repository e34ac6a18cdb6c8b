/**
 * The verifier shared by the token endpoint (subject tokens) and the connect sign-in (ID tokens): what it
 * refuses before any key is looked up (not a JWT, `alg: none`, headers naming keys or demanding processing),
 * the provider's algorithm list, and jose's verdicts mapped to stable reasons. Tokens are signed with real
 * keys; the key getter is jose's own local JWK Set, counted so a test can see whether keys were consulted.
 */
import {
  createLocalJWKSet,
  decodeJwt,
  errors as joseErrors,
  exportJWK,
  generateKeyPair,
  SignJWT,
  type CryptoKey,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import {
  IdpTokenError,
  inspectIdpToken,
  verifyIdpToken,
  type IdpTokenRefusal,
} from '../../../src/identity/idp-token-verifier.js';
import { FORBIDDEN_JWT_HEADERS } from '../../../src/common/jwt-policy.js';

const ISSUER = 'https://idp.example.test/';
const IDP = { issuer: ISSUER, algorithms: ['ES256'] };
const now = () => Math.floor(Date.now() / 1000);

let signingKey: CryptoKey;
let publicJwk: JWK;
let keyLookups = 0;
let getKey: JWTVerifyGetKey;

beforeAll(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true });
  signingKey = pair.privateKey;
  publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  const local = createLocalJWKSet({ keys: [publicJwk] });
  getKey = (header, token) => {
    keyLookups++;
    return local(header, token);
  };
});

beforeEach(() => {
  keyLookups = 0;
});

function claims(overrides: JWTPayload = {}): JWTPayload {
  return { iss: ISSUER, aud: 'custos', sub: 'alice', iat: now(), exp: now() + 300, ...overrides };
}

async function sign(
  payload: JWTPayload = claims(),
  header: Record<string, unknown> = {},
  key: CryptoKey = signingKey,
  crit?: Record<string, boolean>,
): Promise<string> {
  return new SignJWT(payload)
    .setProtectedHeader({ alg: 'ES256', kid: 'k1', ...header })
    .sign(key, crit ? { crit } : undefined);
}

const encode = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

/** The refusal `run` ends with (it must end with one). */
async function refusal(run: () => unknown): Promise<{ reason: IdpTokenRefusal; message: string }> {
  try {
    await run();
  } catch (err) {
    if (err instanceof IdpTokenError) return { reason: err.reason, message: err.message };
    throw err;
  }
  throw new Error('the token was accepted');
}

const verify = (token: string, label = 'subject_token', audience: string | string[] = 'custos') =>
  verifyIdpToken(inspectIdpToken(token, label), IDP, getKey, { audience });

describe('inspectIdpToken', () => {
  it('returns the algorithm and the unverified issuer of a well-formed token', async () => {
    const inspected = inspectIdpToken(await sign(), 'subject_token');
    expect(inspected).toMatchObject({ alg: 'ES256', issuer: ISSUER, label: 'subject_token' });
  });

  it.each(FORBIDDEN_JWT_HEADERS.filter((h) => h !== 'crit'))(
    'refuses a token with a "%s" header, signed by the provider’s own key',
    async (name) => {
      const value = name === 'x5c' ? ['MIIB'] : name === 'jwk' ? publicJwk : 'https://evil.example/keys';
      const token = await sign(claims(), { [name]: value });
      expect(await refusal(() => inspectIdpToken(token, 'ID token'))).toEqual({
        reason: 'forbidden_header',
        message: `Tokens with a "${name}" header are not accepted`,
      });
    },
  );

  it('refuses a token with a "crit" header, even one naming an extension the signer understood', async () => {
    const token = await sign(claims(), { crit: ['urn:example:ext'], 'urn:example:ext': 1 }, signingKey, {
      'urn:example:ext': true,
    });
    expect(await refusal(() => inspectIdpToken(token, 'ID token'))).toEqual({
      reason: 'forbidden_header',
      message: 'Tokens with a "crit" header are not accepted',
    });
  });

  it('refuses an unsigned token (alg none, in any case) and one without alg', async () => {
    for (const header of [{ alg: 'none' }, { alg: 'NONE' }, { typ: 'JWT' }]) {
      const token = `${encode(header)}.${encode(claims())}.`;
      expect(await refusal(() => inspectIdpToken(token, 'subject_token'))).toEqual({
        reason: 'alg_none',
        message: 'Unsigned tokens are not accepted',
      });
    }
  });

  it('refuses what is not a JWT, naming the token as its caller calls it', async () => {
    for (const token of ['not-a-jwt', 'a.b.c', `${encode({ alg: 'ES256' })}.bm90LWpzb24.sig`]) {
      expect(await refusal(() => inspectIdpToken(token, 'subject_token'))).toEqual({
        reason: 'malformed',
        message: 'subject_token is not a JWT',
      });
    }
  });
});

describe('verifyIdpToken', () => {
  it('returns the verified claims of a token signed by the provider’s key', async () => {
    const payload = await verify(await sign(claims({ nonce: 'n-1' })));
    expect(payload).toMatchObject({ iss: ISSUER, aud: 'custos', sub: 'alice', nonce: 'n-1' });
    expect(keyLookups).toBe(1);
  });

  it('accepts any one of several audiences the caller names', async () => {
    const token = await sign(claims({ aud: 'second' }));
    expect((await verify(token, 'subject_token', ['first', 'second'])).aud).toBe('second');
  });

  it('refuses an algorithm the provider does not allow before any key is looked up', async () => {
    const other = await generateKeyPair('ES384');
    const token = await sign(claims(), { alg: 'ES384' }, other.privateKey);
    expect(await refusal(() => verify(token))).toEqual({
      reason: 'alg_not_allowed',
      message: 'Algorithm ES384 is not allowed for this issuer',
    });
    expect(keyLookups).toBe(0);
  });

  it('refuses a token forged with HMAC keyed by the provider’s public key', async () => {
    const forged = await new SignJWT(claims())
      .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .sign(new TextEncoder().encode(JSON.stringify(publicJwk)));
    expect((await refusal(() => verify(forged))).reason).toBe('alg_not_allowed');
    expect(keyLookups).toBe(0);
  });

  it('maps jose’s verdicts to stable reasons, keeping jose’s error as the cause', async () => {
    const stranger = await generateKeyPair('ES256');
    const cases: [string, () => Promise<string>, IdpTokenRefusal, string][] = [
      ['expired', () => sign(claims({ exp: now() - 120 })), 'expired', 'ID token has expired'],
      [
        'not yet valid',
        () => sign(claims({ nbf: now() + 600 })),
        'not_yet_valid',
        'ID token is not valid yet',
      ],
      [
        'another audience',
        () => sign(claims({ aud: 'someone-else' })),
        'wrong_audience',
        'ID token has the wrong audience',
      ],
      [
        'another issuer',
        () => sign(claims({ iss: 'https://other.example/' })),
        'wrong_issuer',
        'ID token has the wrong issuer',
      ],
      ['no exp', () => sign(claims({ exp: undefined })), 'invalid_claims', 'ID token claim "exp" is invalid'],
      [
        'an unknown kid',
        () => sign(claims(), { kid: 'unknown' }),
        'unknown_key',
        'ID token is signed by an unknown key',
      ],
      [
        'a forged signature',
        () => sign(claims(), {}, stranger.privateKey),
        'bad_signature',
        'ID token signature is invalid',
      ],
    ];
    for (const [label, make, reason, message] of cases) {
      const token = await make();
      let caught: unknown;
      await verify(token, 'ID token').catch((err: unknown) => (caught = err));
      expect({ label, caught: caught instanceof IdpTokenError }).toEqual({ label, caught: true });
      const e = caught as IdpTokenError;
      expect({ label, reason: e.reason, message: e.message }).toEqual({ label, reason, message });
      expect({ label, jose: e.cause instanceof joseErrors.JOSEError }).toEqual({ label, jose: true });
    }
  });

  it('requires the claims the caller requires besides exp', async () => {
    const token = await sign(claims());
    const e = await refusal(() =>
      verifyIdpToken(inspectIdpToken(token, 'ID token'), IDP, getKey, {
        audience: 'custos',
        requiredClaims: ['nonce'],
      }),
    );
    expect(e).toEqual({ reason: 'invalid_claims', message: 'ID token claim "nonce" is invalid' });
  });

  it('leaves a failure of the key source itself to the caller, unchanged', async () => {
    class KeysDown extends Error {}
    const down: JWTVerifyGetKey = () => {
      throw new KeysDown('key set could not be fetched');
    };
    const token = await sign();
    await expect(
      verifyIdpToken(inspectIdpToken(token, 'subject_token'), IDP, down, { audience: 'custos' }),
    ).rejects.toBeInstanceOf(KeysDown);
  });

  it('checks the claims it verified, not the unverified ones it inspected', async () => {
    const token = await sign(claims({ sub: 'alice' }));
    const [h, , s] = token.split('.');
    const tampered = `${h}.${encode({ ...decodeJwt(token), sub: 'mallory' })}.${s}`;
    expect((await refusal(() => verify(tampered))).reason).toBe('bad_signature');
  });
});
