/**
 * The per-configuration circuit breaker around a key backend, driven through the real AWS KMS and Vault adapters
 * against the emulators' faults (hang, 500s), with a hand-moved clock: an unreachable backend is asked once per
 * open period instead of once per read, answers other than "unreachable" never open it, and one probe closes it.
 */
import crypto from 'node:crypto';
import { CustosException } from '../../../src/common/errors.js';
import { OutboundHttpClient } from '../../../src/common/outbound-http.js';
import { AwsKmsKeyBackend } from '../../../src/crypto/aws-kms-key-backend.js';
import { CircuitBreakerKeyBackend } from '../../../src/crypto/key-backend-breaker.js';
import type { DataKeyContext, KeyBackend } from '../../../src/crypto/key-backend.js';
import { VaultTransitKeyBackend } from '../../../src/crypto/vault-transit-key-backend.js';
import { startKmsEmulator, type KmsEmulator } from '../../emulators/kms-emulator.js';
import { startVaultEmulator, type VaultEmulator } from '../../emulators/vault-emulator.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const http = new OutboundHttpClient({ allowHosts: ['127.0.0.1'] });
const credentials = {
  accessKeyId: `AKIA${crypto.randomBytes(8).toString('hex').toUpperCase()}`,
  secretAccessKey: crypto.randomBytes(30).toString('base64'),
};
let kms: KmsEmulator;
let vault: VaultEmulator;

beforeAll(async () => {
  kms = await startKmsEmulator({ credentials: [credentials] });
  vault = await startVaultEmulator();
  // A KMS 500, like Vault's: the backend did not really answer.
  kms.faults.errorKind = 'internal';
});
afterAll(async () => {
  http.destroy();
  await kms.close();
  await vault.close();
});
afterEach(() => {
  kms.faults.clear();
  vault.faults.clear();
});

const ctx = (): DataKeyContext => ({ tenantId: crypto.randomUUID(), dataKeyId: crypto.randomUUID() });

async function failure(promise: Promise<unknown>): Promise<CustosException> {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CustosException);
  return error as CustosException;
}

interface Subject {
  name: string;
  backend(): KeyBackend;
  faults(): KmsEmulator['faults'];
  requests(): number;
}

const subjects: Subject[] = [
  {
    name: 'aws-kms',
    backend: () =>
      new AwsKmsKeyBackend({
        keyId: kms.createKey().keyId,
        region: 'us-east-1',
        endpoint: kms.url,
        credentials,
        http,
        timeoutMs: 250,
        maxAttempts: 1,
      }),
    faults: () => kms.faults,
    requests: () => kms.requests,
  },
  {
    name: 'vault-transit',
    backend: () => {
      const keyName = `k-${crypto.randomUUID()}`;
      vault.createTransitKey(keyName);
      return new VaultTransitKeyBackend({
        address: vault.url,
        keyName,
        token: vault.rootToken,
        http,
        timeoutMs: 250,
      });
    },
    faults: () => vault.faults as unknown as KmsEmulator['faults'],
    requests: () => vault.requests,
  },
];

describe.each(subjects)('CircuitBreakerKeyBackend over $name', (subject) => {
  let now = 1_000_000;
  const clock = () => now;
  let fastFails = 0;
  const breakerFor = (inner: KeyBackend) =>
    new CircuitBreakerKeyBackend(inner, { openMs: 5000, now: clock, onFastFail: () => fastFails++ });

  it('after a timeout, fails at once without asking the backend until the open period ends', async () => {
    const breaker = breakerFor(subject.backend());
    const generated = await breaker.generateDataKey(ctx());
    expect(breaker.state).toBe('closed');
    subject.faults().hang = true;
    const first = await failure(breaker.check());
    expect(first.details).toMatchObject({ reason: 'unreachable' });
    expect(breaker.state).toBe('open');
    const requests = subject.requests();
    const before = fastFails;
    for (let i = 0; i < 5; i++) {
      const fast = await failure(breaker.unwrapDataKey(generated.wrapped, ctx()));
      expect({ code: fast.code, details: fast.details }).toEqual({
        code: 'key_unavailable',
        details: { backend: subject.name, reason: 'unreachable', circuit: 'open' },
      });
    }
    expect(subject.requests()).toBe(requests);
    expect(fastFails - before).toBe(5);
    subject.faults().hang = false;
  });

  it('lets one probe through once the period is over; its success closes the circuit', async () => {
    const breaker = breakerFor(subject.backend());
    const c = ctx();
    const generated = await breaker.generateDataKey(c);
    subject.faults().errorRate = 1;
    await failure(breaker.check());
    expect(breaker.state).toBe('open');
    subject.faults().errorRate = 0;
    now += 5000;
    expect(breaker.state).toBe('half-open');
    subject.faults().latencyMs = 50;
    const requests = subject.requests();
    const probe = breaker.unwrapDataKey(generated.wrapped, c);
    // While the probe is out, others still fail at once.
    const other = await failure(breaker.unwrapDataKey(generated.wrapped, c));
    expect(other.details?.circuit).toBe('open');
    expect((await probe).equals(generated.plaintext)).toBe(true);
    expect(subject.requests() - requests).toBe(1);
    expect(breaker.state).toBe('closed');
    expect((await breaker.unwrapDataKey(generated.wrapped, c)).equals(generated.plaintext)).toBe(true);
  });

  it('opens again when the probe finds the backend still unreachable', async () => {
    const breaker = breakerFor(subject.backend());
    subject.faults().errorRate = 1;
    await failure(breaker.check());
    now += 5000;
    const probe = await failure(breaker.check());
    expect(probe.details?.circuit).toBeUndefined();
    expect(breaker.state).toBe('open');
    const requests = subject.requests();
    await failure(breaker.check());
    expect(subject.requests()).toBe(requests);
  });

  it('never opens on an answer, even a bad-ciphertext verdict', async () => {
    const breaker = breakerFor(subject.backend());
    const c = ctx();
    const { wrapped } = await breaker.generateDataKey(c);
    const requests = subject.requests();
    for (let i = 0; i < 3; i++) {
      const invalid = await failure(breaker.unwrapDataKey(wrapped, { ...c, tenantId: 'someone-else' }));
      expect(invalid.code).toBe('key_invalid');
    }
    expect(breaker.state).toBe('closed');
    expect(subject.requests() - requests).toBe(3);
  });

  it('is off with an open period of 0', async () => {
    const breaker = new CircuitBreakerKeyBackend(subject.backend(), { openMs: 0, now: clock });
    subject.faults().errorRate = 1;
    const requests = subject.requests();
    await failure(breaker.check());
    await failure(breaker.check());
    expect(breaker.state).toBe('closed');
    expect(subject.requests() - requests).toBe(2);
  });
});
