/**
 * Finding 9 of issue 12: at save time, a URL whose host does not exist is the tenant's input (400
 * outbound_url_unresolvable, reason dns_resolution_failed); a resolver that fails or a request made at run
 * time stays an upstream failure (outbound_request_failed).
 */
import { CustosException } from '../../../src/common/errors.js';
import { statusFor, type ErrorCode } from '../../../src/http/error-codes.js';
import { OutboundHttpClient } from '../../../src/common/outbound-http.js';

const failing = (code: string) =>
  new OutboundHttpClient({
    resolve: async (host) => {
      throw Object.assign(new Error(`getaddrinfo ${code} ${host}`), { code });
    },
  });

async function caught(p: Promise<unknown>): Promise<CustosException> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CustosException);
  return err as CustosException;
}

describe('assertUrlAllowed (save time)', () => {
  it.each(['ENOTFOUND', 'ENODATA'])(
    'answers a name that does not exist (%s) as 400 outbound_url_unresolvable',
    async (code) => {
      const err = await caught(failing(code).assertUrlAllowed('https://nowhere.example/jwks'));
      expect(err.code).toBe('outbound_url_unresolvable');
      expect(statusFor(err.code as ErrorCode)).toBe(400);
      expect(err.details).toEqual({ reason: 'dns_resolution_failed' });
      expect(err.message).toBe('Could not resolve https://nowhere.example: no such host');
    },
  );

  it('answers a resolver that returns no address the same way', async () => {
    const err = await caught(
      new OutboundHttpClient({ resolve: async () => [] }).assertUrlAllowed('https://empty.example/'),
    );
    expect(err.code).toBe('outbound_url_unresolvable');
  });

  it('keeps a failing resolver (EAI_AGAIN, SERVFAIL) an upstream failure', async () => {
    for (const code of ['EAI_AGAIN', 'ESERVFAIL', 'ECONNREFUSED']) {
      const err = await caught(failing(code).assertUrlAllowed('https://flaky.example/'));
      expect(err.code).toBe('outbound_request_failed');
      expect(err.details).toEqual({ reason: 'dns_resolution_failed' });
    }
  });
});

describe('request (run time)', () => {
  it('keeps a name that does not resolve an upstream failure: the provider’s DNS may be down', async () => {
    const err = await caught(failing('ENOTFOUND').request('https://nowhere.example/token'));
    expect(err.code).toBe('outbound_request_failed');
    expect(err.details).toEqual({ reason: 'dns_resolution_failed' });
  });
});
