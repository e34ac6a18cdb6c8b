/**
 * A test identity provider: ES256 keys generated at run time, a real JWKS served over HTTP on loopback, and
 * a signer for user tokens and connector client assertions (jose). Counts JWKS fetches.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';

export interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

export async function newSigningKey(kid: string = randomUUID(), alg = 'ES256'): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

export async function signJwt(
  key: SigningKey,
  claims: JWTPayload,
  opts: { alg?: string; header?: Record<string, unknown>; kid?: string | null } = {},
): Promise<string> {
  const header = {
    alg: opts.alg ?? 'ES256',
    ...(opts.kid === null ? {} : { kid: opts.kid ?? key.kid }),
    ...opts.header,
  };
  return new SignJWT(claims).setProtectedHeader(header).sign(key.privateKey);
}

export interface TestIdp {
  issuer: string;
  jwksUri: string;
  /** host:port, for CUSTOS_OUTBOUND_ALLOW_HOSTS. */
  hostPort: string;
  keys: SigningKey[];
  fetches: number;
  /** Serves this status instead of the key set while set. */
  failWith: number | null;
  /** A user token with sensible defaults; `claims` override them. */
  token(claims?: JWTPayload, opts?: Parameters<typeof signJwt>[2], key?: SigningKey): Promise<string>;
  close(): Promise<void>;
}

export async function startTestIdp(audience = 'custos'): Promise<TestIdp> {
  const idp = {
    keys: [await newSigningKey()],
    fetches: 0,
    failWith: null as number | null,
  } as TestIdp;
  const server = http.createServer((req, res) => {
    if (req.url !== '/jwks') {
      res.writeHead(404).end();
      return;
    }
    idp.fetches++;
    if (idp.failWith !== null) {
      res.writeHead(idp.failWith).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: idp.keys.map((k) => k.publicJwk) }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  idp.hostPort = `127.0.0.1:${port}`;
  idp.issuer = `http://127.0.0.1:${port}/`;
  idp.jwksUri = `http://127.0.0.1:${port}/jwks`;
  idp.token = (claims = {}, opts = {}, key = idp.keys[0]) => {
    const now = Math.floor(Date.now() / 1000);
    return signJwt(
      key,
      { iss: idp.issuer, aud: audience, sub: 'alice', iat: now, exp: now + 300, ...claims },
      opts,
    );
  };
  idp.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return idp;
}
