/**
 * Times every call that reaches a key backend, by backend type, operation and result, for /metrics. Calls refused
 * by an open circuit never reach the backend: they are counted by `custos_key_backend_fast_failures_total`.
 */
import { performance } from 'node:perf_hooks';
import { Histogram, type Registry } from 'prom-client';
import type {
  DataKeyContext,
  GeneratedDataKey,
  KeyBackend,
  KeyBackendType,
  WrappedDataKey,
} from './key-backend.js';

export type KeyBackendOperation = 'generate' | 'wrap' | 'unwrap' | 'rewrap' | 'check' | 'rotate';

export type KeyBackendLatency = Histogram<'backend' | 'operation' | 'result'>;

export function keyBackendLatency(registry: Registry): KeyBackendLatency {
  return new Histogram({
    name: 'custos_key_backend_call_duration_seconds',
    help: 'Key-backend calls by backend type, operation (generate, wrap, unwrap, rewrap, check, rotate) and result (ok, error).',
    labelNames: ['backend', 'operation', 'result'] as const,
    // From the managed keyring's microseconds to a remote KMS's timeout.
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
}

export class TimedKeyBackend implements KeyBackend {
  readonly type: KeyBackendType;
  readonly rotateKey?: () => Promise<unknown>;

  constructor(
    private readonly inner: KeyBackend,
    private readonly latency: KeyBackendLatency,
  ) {
    this.type = inner.type;
    // Only where the backend rotates: callers test for the method.
    const rotate = inner.rotateKey?.bind(inner);
    if (rotate) this.rotateKey = () => this.time('rotate', rotate);
  }

  generateDataKey(ctx: DataKeyContext): Promise<GeneratedDataKey> {
    return this.time('generate', () => this.inner.generateDataKey(ctx));
  }

  unwrapDataKey(wrapped: Buffer, ctx: DataKeyContext): Promise<Buffer> {
    return this.time('unwrap', () => this.inner.unwrapDataKey(wrapped, ctx));
  }

  wrapDataKey(plaintext: Buffer, ctx: DataKeyContext): Promise<WrappedDataKey> {
    return this.time('wrap', () => this.inner.wrapDataKey(plaintext, ctx));
  }

  rewrapDataKey(wrapped: Buffer, ctx: DataKeyContext): Promise<WrappedDataKey> {
    return this.time('rewrap', () => this.inner.rewrapDataKey(wrapped, ctx));
  }

  check(): Promise<void> {
    return this.time('check', () => this.inner.check());
  }

  close(): void {
    this.inner.close?.();
  }

  private async time<T>(operation: KeyBackendOperation, call: () => Promise<T>): Promise<T> {
    const started = performance.now();
    let result = 'error';
    try {
      const value = await call();
      result = 'ok';
      return value;
    } finally {
      this.latency.observe({ backend: this.type, operation, result }, (performance.now() - started) / 1000);
    }
  }
}
