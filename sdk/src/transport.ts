/**
 * One call to Custos with its attempts: each attempt gets a fresh request (a client assertion is single use),
 * its own timeout combined with the caller's signal, and a bounded body; failures that may go away (network,
 * timeout, 429, 502-504) are tried again after a backoff or Custos's `Retry-After`. A caller's abort ends it
 * at once with the signal's reason.
 */
import { CustosError } from './errors.js';
import { isRetryable, retryDelayMs, sleep, type RetryEvent, type RetryPolicy } from './retry.js';

/** The most of an answer the SDK reads; Custos's answers are a few hundred bytes. */
const MAX_BODY_BYTES = 1024 * 1024;

export interface TransportOptions {
  fetch: typeof fetch;
  timeoutMs: number;
  retry: RetryPolicy;
  onRetry?: (event: RetryEvent) => void;
}

export interface Answer {
  status: number;
  headers: Headers;
  /** The parsed JSON body; undefined when empty or not JSON. */
  body: unknown;
  /** When this attempt was sent (ms), for expiries counted from it. */
  sentAt: number;
}

export interface OutgoingRequest {
  url: string;
  init: RequestInit;
}

export class Transport {
  constructor(private readonly options: TransportOptions) {}

  /**
   * Sends what `build` makes (called again for each attempt) and hands the answer to `read`, which returns
   * the result or throws; what it throws is retried when `isRetryable` says so.
   */
  async call<T>(
    build: () => Promise<OutgoingRequest>,
    read: (answer: Answer) => T,
    signal?: AbortSignal,
  ): Promise<T> {
    const { retry, onRetry } = this.options;
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      try {
        return read(await this.once(await build(), signal));
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (attempt >= retry.attempts || !isRetryable(err)) throw err;
        const delayMs = retryDelayMs(retry, attempt, err.retryAfterSeconds);
        onRetry?.({
          attempt,
          delayMs,
          code: err.code,
          ...(err.status !== undefined && { status: err.status }),
        });
        await sleep(delayMs, signal);
      }
    }
  }

  private async once(request: OutgoingRequest, signal?: AbortSignal): Promise<Answer> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    const sentAt = Date.now();
    try {
      const res = await this.options.fetch(request.url, {
        ...request.init,
        signal: combined,
        // A redirect would carry the client's credentials elsewhere: never followed.
        redirect: 'manual',
      });
      const text = await readBounded(res);
      return { status: res.status, headers: res.headers, body: parseJson(text), sentAt };
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (err instanceof CustosError) throw err;
      if (timeout.aborted) {
        throw new CustosError('timeout', `Custos did not answer within ${this.options.timeoutMs} ms`);
      }
      throw new CustosError(
        'network_error',
        `Could not reach Custos at ${originOf(request.url)}: ${why(err)}`,
        {
          cause: err,
        },
      );
    }
  }
}

async function readBounded(res: Response): Promise<string> {
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > MAX_BODY_BYTES) {
    await res.body?.cancel();
    throw tooLarge(res.status);
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_BODY_BYTES) {
      await reader.cancel();
      throw tooLarge(res.status);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const tooLarge = (status: number) =>
  new CustosError('invalid_response', `Custos's answer is larger than ${MAX_BODY_BYTES} bytes`, { status });

function parseJson(text: string): unknown {
  if (text.length === 0) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return 'its URL';
  }
}

/** A network failure's reason, from undici's cause (ECONNREFUSED, ...) when there is one. */
function why(err: unknown): string {
  if (!(err instanceof Error)) return 'unknown error';
  const cause = err.cause as { code?: unknown; message?: unknown } | undefined;
  if (cause && typeof cause.code === 'string') return cause.code;
  if (cause && typeof cause.message === 'string') return cause.message;
  return err.message;
}

/** A JSON object's field, if the body is an object. */
export function field(body: unknown, name: string): unknown {
  return typeof body === 'object' && body !== null && !Array.isArray(body)
    ? (body as Record<string, unknown>)[name]
    : undefined;
}

/** Text from the server for a message: one line, printable, bounded. */
export function serverText(value: unknown, max = 300): string | undefined {
  if (typeof value !== 'string') return undefined;
  // eslint-disable-next-line no-control-regex
  const clean = value.replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ').trim();
  if (clean.length === 0) return undefined;
  return clean.length > max ? clean.slice(0, max) + '…' : clean;
}
