/**
 * A circuit breaker around one key-backend configuration: once a call finds the backend unreachable (no answer in
 * time, refused, 5xx), calls to that configuration fail at once with key_unavailable for a short while instead of
 * each waiting out the full timeout; then one call is let through as a probe, and its answer closes the circuit
 * or opens it again. Any answer from the backend, even a refusal or a bad-ciphertext verdict, proves it reachable:
 * only "unreachable" opens the circuit. One breaker per configuration, so a dead key costs only its own tenant.
 * Closed (the healthy case), a call costs one comparison.
 */
import { CommonException, CustosException } from '../common/errors.js';
import type {
  DataKeyContext,
  GeneratedDataKey,
  KeyBackend,
  KeyBackendType,
  WrappedDataKey,
} from './key-backend.js';
import { CryptoException } from './crypto.errors.js';

export interface BreakerOptions {
  /** How long the circuit stays open before a probe; 0 turns the breaker off. */
  openMs: number;
  now?: () => number;
  /** Called for each call refused without reaching the backend (metrics). */
  onFastFail?: (type: KeyBackendType) => void;
}

export type BreakerState = 'closed' | 'open' | 'half-open';

function isUnreachable(error: unknown): boolean {
  return (
    error instanceof CustosException &&
    error.code === 'key_unavailable' &&
    error.details?.reason === 'unreachable'
  );
}

export class CircuitBreakerKeyBackend implements KeyBackend {
  readonly type: KeyBackendType;
  /** 0 while closed; otherwise when the next probe may go. */
  #openUntil = 0;
  #probing = false;
  readonly #now: () => number;

  constructor(
    readonly inner: KeyBackend,
    private readonly options: BreakerOptions,
  ) {
    this.type = inner.type;
    this.#now = options.now ?? Date.now;
  }

  get state(): BreakerState {
    if (this.#openUntil === 0) return 'closed';
    return this.#probing || this.#now() < this.#openUntil ? 'open' : 'half-open';
  }

  generateDataKey(ctx: DataKeyContext): Promise<GeneratedDataKey> {
    return this.guard(() => this.inner.generateDataKey(ctx));
  }

  unwrapDataKey(wrapped: Buffer, ctx: DataKeyContext): Promise<Buffer> {
    return this.guard(() => this.inner.unwrapDataKey(wrapped, ctx));
  }

  wrapDataKey(plaintext: Buffer, ctx: DataKeyContext): Promise<WrappedDataKey> {
    return this.guard(() => this.inner.wrapDataKey(plaintext, ctx));
  }

  rewrapDataKey(wrapped: Buffer, ctx: DataKeyContext): Promise<WrappedDataKey> {
    return this.guard(() => this.inner.rewrapDataKey(wrapped, ctx));
  }

  check(): Promise<void> {
    return this.guard(() => this.inner.check());
  }

  rotateKey(): Promise<unknown> {
    const rotate = this.inner.rotateKey?.bind(this.inner);
    if (!rotate)
      return Promise.reject(new CommonException('internal_error', 'This key backend does not rotate'));
    return this.guard(rotate);
  }

  close(): void {
    this.inner.close?.();
  }

  private async guard<T>(call: () => Promise<T>): Promise<T> {
    if (this.#openUntil === 0) {
      try {
        return await call();
      } catch (error) {
        if (isUnreachable(error) && this.options.openMs > 0)
          this.#openUntil = this.#now() + this.options.openMs;
        throw error;
      }
    }
    if (this.#probing || this.#now() < this.#openUntil) throw this.fastFailure();
    this.#probing = true;
    try {
      const result = await call();
      this.#openUntil = 0;
      return result;
    } catch (error) {
      this.#openUntil = isUnreachable(error) ? this.#now() + this.options.openMs : 0;
      throw error;
    } finally {
      this.#probing = false;
    }
  }

  private fastFailure(): CustosException {
    this.options.onFastFail?.(this.type);
    return new CryptoException(
      'key_unavailable',
      'The key backend was unreachable moments ago; retry shortly',
      {
        backend: this.type,
        reason: 'unreachable',
        circuit: 'open',
      },
    );
  }
}
