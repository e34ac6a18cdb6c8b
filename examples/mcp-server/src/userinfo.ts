/**
 * The call to the third-party provider, as the user: its userinfo endpoint with the user's own provider token
 * (released by Custos). Bounded in time and size, and no redirect is followed (a redirect would carry the
 * token's request to a host nobody configured).
 */
import { readCapped } from './auth.js';

const USERINFO_TIMEOUT_MS = 10_000;
const MAX_USERINFO_BYTES = 256 * 1024;

/** The provider did not answer with what the user looks like; `status` is its HTTP status, when it answered. */
export class ProviderError extends Error {
  override readonly name = 'ProviderError';
  constructor(
    message: string,
    readonly status?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export async function fetchUserinfo(
  url: string,
  accessToken: string,
  signal?: AbortSignal,
): Promise<Record<string, unknown>> {
  const timeout = AbortSignal.timeout(USERINFO_TIMEOUT_MS);
  let res: Response;
  try {
    res = await fetch(url, {
      headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' },
      redirect: 'manual',
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
  } catch (err) {
    const timedOut = timeout.aborted;
    throw new ProviderError(
      timedOut ? 'The provider did not answer in time' : 'The provider could not be reached',
      undefined,
      {
        cause: err,
      },
    );
  }
  if (res.status >= 300 && res.status < 400) {
    await res.body?.cancel();
    throw new ProviderError('The provider answered with a redirect, which is not followed', res.status);
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new ProviderError(`The provider answered HTTP ${res.status}`, res.status);
  }
  let body: unknown;
  try {
    body = JSON.parse(await readCapped(res, MAX_USERINFO_BYTES));
  } catch {
    throw new ProviderError('The provider’s answer is not JSON', res.status);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ProviderError('The provider’s answer is not a JSON object', res.status);
  }
  return body as Record<string, unknown>;
}
