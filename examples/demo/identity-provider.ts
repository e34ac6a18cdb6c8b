/**
 * The demo's identity provider: the company sign-in system whose tokens say who a user is. It serves its
 * public keys (a JWK Set) on loopback, which Custos trusts for the demo tenant, and signs user tokens with
 * the private key, which never leaves this process. A real deployment trusts Okta, Entra ID, Keycloak...
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { closeServer, listen } from './loopback.js';

export interface DemoIdentityProvider {
  /** `http://127.0.0.1:<port>/`, the `iss` of its tokens. */
  issuer: string;
  jwksUri: string;
  /** `127.0.0.1:<port>`, for CUSTOS_OUTBOUND_ALLOW_HOSTS. */
  hostPort: string;
  /** A user token (ES256 JWT) for `sub`, issued to the agent application `azp`, valid for `ttlSeconds`. */
  userToken(sub: string, opts: { audience: string; azp: string; ttlSeconds: number }): Promise<string>;
  close(): Promise<void>;
}

export async function startIdentityProvider(port: number): Promise<DemoIdentityProvider> {
  const kid = 'demo-idp-1';
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwks = JSON.stringify({
    keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }],
  });
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/jwks') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300' }).end(jwks);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  await listen(server, port);
  const actual = (server.address() as AddressInfo).port;
  const origin = `http://127.0.0.1:${actual}`;
  return {
    issuer: `${origin}/`,
    jwksUri: `${origin}/jwks`,
    hostPort: `127.0.0.1:${actual}`,
    userToken: (sub, opts) => signUserToken(privateKey, kid, `${origin}/`, sub, opts),
    close: () => closeServer(server),
  };
}

function signUserToken(
  key: CryptoKey,
  kid: string,
  issuer: string,
  sub: string,
  opts: { audience: string; azp: string; ttlSeconds: number },
): Promise<string> {
  return new SignJWT({ azp: opts.azp })
    .setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' })
    .setIssuer(issuer)
    .setSubject(sub)
    .setAudience(opts.audience)
    .setIssuedAt()
    .setExpirationTime(`${opts.ttlSeconds}s`)
    .sign(key);
}
