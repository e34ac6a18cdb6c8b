/**
 * The KMS emulator, driven only through the real @aws-sdk/client-kms over HTTP on 127.0.0.1: every operation, the
 * error shapes as the SDK surfaces them, encryption-context binding, key resolution, rotation, key states, SigV4
 * authentication and the fault knobs.
 */
import crypto from 'node:crypto';
import {
  CancelKeyDeletionCommand,
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DeleteAliasCommand,
  DescribeKeyCommand,
  DisableKeyCommand,
  EnableKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  KMSClient,
  type KMSClientConfig,
  ReEncryptCommand,
  RotateKeyOnDemandCommand,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import {
  startKmsEmulator,
  type KmsEmulator,
  type KmsEmulatorCredentials,
} from '../../emulators/kms-emulator.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const REGION = 'eu-west-1';

function aCredential(): KmsEmulatorCredentials {
  return {
    accessKeyId: `AKIA${crypto.randomBytes(8).toString('hex').toUpperCase()}`,
    secretAccessKey: crypto.randomBytes(30).toString('base64'),
  };
}

function clientFor(
  kms: KmsEmulator,
  credentials: KmsEmulatorCredentials,
  overrides: Partial<KMSClientConfig> = {},
): KMSClient {
  return new KMSClient({ endpoint: kms.url, region: REGION, credentials, maxAttempts: 1, ...overrides });
}

interface SdkError extends Error {
  __type?: string;
  $fault?: string;
  $metadata?: { httpStatusCode?: number; attempts?: number };
}

async function sdkError(promise: Promise<unknown>): Promise<SdkError> {
  const error: unknown = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(Error);
  return error as SdkError;
}

async function expectKmsError(promise: Promise<unknown>, name: string, status = 400): Promise<SdkError> {
  const error = await sdkError(promise);
  expect(error.name).toBe(name);
  expect(error.__type).toBe(name);
  expect(error.$metadata?.httpStatusCode).toBe(status);
  return error;
}

const bytes = (n: number) => crypto.randomBytes(n);

describe('KMS emulator through @aws-sdk/client-kms', () => {
  const credentials = aCredential();
  let kms: KmsEmulator;
  let client: KMSClient;

  beforeAll(async () => {
    kms = await startKmsEmulator({ region: REGION, credentials: [credentials] });
    client = clientFor(kms, credentials);
  });

  afterAll(async () => {
    client.destroy();
    await kms.close();
  });

  afterEach(() => kms.faults.clear());

  describe('CreateKey and DescribeKey', () => {
    it('creates a symmetric key and describes it by key id, key ARN, alias name and alias ARN', async () => {
      const created = await client.send(new CreateKeyCommand({ Description: 'tenant key' }));
      const metadata = created.KeyMetadata!;
      expect(metadata.KeyId).toMatch(/^[0-9a-f-]{36}$/);
      expect(metadata.Arn).toBe(`arn:aws:kms:${REGION}:111122223333:key/${metadata.KeyId}`);
      expect(metadata).toMatchObject({
        Enabled: true,
        KeyState: 'Enabled',
        KeyUsage: 'ENCRYPT_DECRYPT',
        KeySpec: 'SYMMETRIC_DEFAULT',
        Description: 'tenant key',
      });
      expect(metadata.CreationDate).toBeInstanceOf(Date);

      const alias = `alias/describe-${crypto.randomUUID()}`;
      await client.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: metadata.KeyId }));
      for (const ref of [
        metadata.KeyId!,
        metadata.Arn!,
        alias,
        `arn:aws:kms:${REGION}:111122223333:${alias}`,
      ]) {
        const described = await client.send(new DescribeKeyCommand({ KeyId: ref }));
        expect(described.KeyMetadata?.Arn).toBe(metadata.Arn);
      }
    });

    it('answers NotFoundException for an unknown key, alias or foreign-region ARN', async () => {
      const key = kms.createKey();
      await expectKmsError(
        client.send(new DescribeKeyCommand({ KeyId: crypto.randomUUID() })),
        'NotFoundException',
      );
      await expectKmsError(
        client.send(new DescribeKeyCommand({ KeyId: 'alias/nothing-here' })),
        'NotFoundException',
      );
      await expectKmsError(
        client.send(new DescribeKeyCommand({ KeyId: key.arn.replace(REGION, 'us-west-2') })),
        'NotFoundException',
      );
    });

    it('answers ValidationException for a missing KeyId and UnsupportedOperationException for asymmetric keys', async () => {
      await expectKmsError(client.send(new DescribeKeyCommand({ KeyId: undefined })), 'ValidationException');
      await expectKmsError(
        client.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' })),
        'UnsupportedOperationException',
      );
    });
  });

  describe('GenerateDataKey', () => {
    it('returns a 32-byte AES_256 key whose blob decrypts to the same bytes under the same context', async () => {
      const key = kms.createKey();
      const context = { tenant: 't-1', purpose: 'data-key' };
      const generated = await client.send(
        new GenerateDataKeyCommand({ KeyId: key.keyId, KeySpec: 'AES_256', EncryptionContext: context }),
      );
      expect(generated.KeyId).toBe(key.arn);
      expect(generated.Plaintext).toHaveLength(32);
      const decrypted = await client.send(
        new DecryptCommand({ CiphertextBlob: generated.CiphertextBlob, EncryptionContext: context }),
      );
      expect(Buffer.from(decrypted.Plaintext!).equals(Buffer.from(generated.Plaintext!))).toBe(true);
      expect(decrypted.KeyId).toBe(key.arn);
    });

    it('honours NumberOfBytes and AES_128, and refuses both or neither', async () => {
      const key = kms.createKey();
      const seven = await client.send(new GenerateDataKeyCommand({ KeyId: key.keyId, NumberOfBytes: 7 }));
      expect(seven.Plaintext).toHaveLength(7);
      const aes128 = await client.send(new GenerateDataKeyCommand({ KeyId: key.keyId, KeySpec: 'AES_128' }));
      expect(aes128.Plaintext).toHaveLength(16);
      await expectKmsError(
        client.send(new GenerateDataKeyCommand({ KeyId: key.keyId, KeySpec: 'AES_256', NumberOfBytes: 32 })),
        'ValidationException',
      );
      await expectKmsError(
        client.send(new GenerateDataKeyCommand({ KeyId: key.keyId })),
        'ValidationException',
      );
      await expectKmsError(
        client.send(new GenerateDataKeyCommand({ KeyId: key.keyId, NumberOfBytes: 2048 })),
        'ValidationException',
      );
    });

    it('gives a fresh key every time', async () => {
      const key = kms.createKey();
      const a = await client.send(new GenerateDataKeyCommand({ KeyId: key.keyId, KeySpec: 'AES_256' }));
      const b = await client.send(new GenerateDataKeyCommand({ KeyId: key.keyId, KeySpec: 'AES_256' }));
      expect(Buffer.from(a.Plaintext!).equals(Buffer.from(b.Plaintext!))).toBe(false);
    });
  });

  describe('Encrypt and Decrypt', () => {
    it('round-trips, and Decrypt without KeyId finds the key named in the blob', async () => {
      const key = kms.createKey();
      const plaintext = bytes(100);
      const encrypted = await client.send(new EncryptCommand({ KeyId: key.arn, Plaintext: plaintext }));
      expect(encrypted.KeyId).toBe(key.arn);
      expect(encrypted.EncryptionAlgorithm).toBe('SYMMETRIC_DEFAULT');
      expect(kms.describeCiphertext(encrypted.CiphertextBlob!)).toEqual({
        keyId: key.keyId,
        materialVersion: 1,
      });
      const decrypted = await client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob }));
      expect(Buffer.from(decrypted.Plaintext!).equals(plaintext)).toBe(true);
      const withKeyId = await client.send(
        new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob, KeyId: key.keyId }),
      );
      expect(Buffer.from(withKeyId.Plaintext!).equals(plaintext)).toBe(true);
    });

    it('requires exactly the same encryption context, whatever the key order', async () => {
      const key = kms.createKey();
      const context = { 'custos:tenant': 'a', 'custos:data-key': 'k-1' };
      const encrypted = await client.send(
        new EncryptCommand({ KeyId: key.keyId, Plaintext: bytes(32), EncryptionContext: context }),
      );
      const blob = encrypted.CiphertextBlob;
      const reordered = { 'custos:data-key': 'k-1', 'custos:tenant': 'a' };
      await expect(
        client.send(new DecryptCommand({ CiphertextBlob: blob, EncryptionContext: reordered })),
      ).resolves.toBeDefined();
      const wrongContexts: Array<Record<string, string> | undefined> = [
        undefined,
        {},
        { 'custos:tenant': 'b', 'custos:data-key': 'k-1' },
        { 'custos:tenant': 'a' },
        { ...context, extra: 'x' },
      ];
      for (const wrong of wrongContexts) {
        await expectKmsError(
          client.send(new DecryptCommand({ CiphertextBlob: blob, EncryptionContext: wrong })),
          'InvalidCiphertextException',
        );
      }
    });

    it('answers IncorrectKeyException when KeyId names another key than the blob', async () => {
      const [a, b] = [kms.createKey(), kms.createKey()];
      const encrypted = await client.send(new EncryptCommand({ KeyId: a.keyId, Plaintext: bytes(16) }));
      await expectKmsError(
        client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob, KeyId: b.keyId })),
        'IncorrectKeyException',
      );
    });

    it('answers InvalidCiphertextException for a tampered or foreign blob', async () => {
      const key = kms.createKey();
      const encrypted = await client.send(new EncryptCommand({ KeyId: key.keyId, Plaintext: bytes(16) }));
      const tampered = Buffer.from(encrypted.CiphertextBlob!);
      tampered[tampered.length - 1] ^= 0x01;
      await expectKmsError(
        client.send(new DecryptCommand({ CiphertextBlob: tampered })),
        'InvalidCiphertextException',
      );
      await expectKmsError(
        client.send(new DecryptCommand({ CiphertextBlob: bytes(80) })),
        'InvalidCiphertextException',
      );
    });

    it('refuses an empty or oversized plaintext with ValidationException', async () => {
      const key = kms.createKey();
      await expectKmsError(
        client.send(new EncryptCommand({ KeyId: key.keyId, Plaintext: bytes(4097) })),
        'ValidationException',
      );
    });
  });

  describe('ReEncrypt', () => {
    it('moves a ciphertext to another key and context', async () => {
      const [source, destination] = [kms.createKey(), kms.createKey()];
      const plaintext = bytes(32);
      const encrypted = await client.send(
        new EncryptCommand({ KeyId: source.keyId, Plaintext: plaintext, EncryptionContext: { v: '1' } }),
      );
      const reencrypted = await client.send(
        new ReEncryptCommand({
          CiphertextBlob: encrypted.CiphertextBlob,
          SourceEncryptionContext: { v: '1' },
          DestinationKeyId: destination.arn,
          DestinationEncryptionContext: { v: '2' },
        }),
      );
      expect(reencrypted.SourceKeyId).toBe(source.arn);
      expect(reencrypted.KeyId).toBe(destination.arn);
      expect(kms.describeCiphertext(reencrypted.CiphertextBlob!).keyId).toBe(destination.keyId);
      const decrypted = await client.send(
        new DecryptCommand({ CiphertextBlob: reencrypted.CiphertextBlob, EncryptionContext: { v: '2' } }),
      );
      expect(Buffer.from(decrypted.Plaintext!).equals(plaintext)).toBe(true);
    });

    it('checks the source context and the source key id', async () => {
      const [source, other] = [kms.createKey(), kms.createKey()];
      const encrypted = await client.send(
        new EncryptCommand({ KeyId: source.keyId, Plaintext: bytes(32), EncryptionContext: { v: '1' } }),
      );
      await expectKmsError(
        client.send(
          new ReEncryptCommand({
            CiphertextBlob: encrypted.CiphertextBlob,
            SourceEncryptionContext: { v: 'other' },
            DestinationKeyId: source.keyId,
          }),
        ),
        'InvalidCiphertextException',
      );
      await expectKmsError(
        client.send(
          new ReEncryptCommand({
            CiphertextBlob: encrypted.CiphertextBlob,
            SourceKeyId: other.keyId,
            SourceEncryptionContext: { v: '1' },
            DestinationKeyId: source.keyId,
          }),
        ),
        'IncorrectKeyException',
      );
    });
  });

  describe('aliases', () => {
    it('resolves a new alias and refuses duplicates, reserved names and aliases as targets', async () => {
      const key = kms.createKey();
      const alias = `alias/custos-${crypto.randomUUID()}`;
      await client.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: key.arn }));
      const encrypted = await client.send(new EncryptCommand({ KeyId: alias, Plaintext: bytes(8) }));
      expect(encrypted.KeyId).toBe(key.arn);
      await expectKmsError(
        client.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: key.keyId })),
        'AlreadyExistsException',
      );
      await expectKmsError(
        client.send(new CreateAliasCommand({ AliasName: 'alias/aws/reserved', TargetKeyId: key.keyId })),
        'ValidationException',
      );
      await expectKmsError(
        client.send(new CreateAliasCommand({ AliasName: 'no-prefix', TargetKeyId: key.keyId })),
        'ValidationException',
      );
      await expectKmsError(
        client.send(new CreateAliasCommand({ AliasName: `${alias}-2`, TargetKeyId: alias })),
        'NotFoundException',
      );
      await client.send(new DeleteAliasCommand({ AliasName: alias }));
      await expectKmsError(client.send(new DescribeKeyCommand({ KeyId: alias })), 'NotFoundException');
    });
  });

  describe('RotateKeyOnDemand', () => {
    it('adds key material: new ciphertexts use it and old ones still decrypt', async () => {
      const key = kms.createKey();
      const old = await client.send(new EncryptCommand({ KeyId: key.keyId, Plaintext: Buffer.from('old') }));
      const rotated = await client.send(new RotateKeyOnDemandCommand({ KeyId: key.arn }));
      expect(rotated.KeyId).toBe(key.keyId);
      expect(kms.materialVersions(key.keyId)).toBe(2);
      const fresh = await client.send(
        new EncryptCommand({ KeyId: key.keyId, Plaintext: Buffer.from('new') }),
      );
      expect(kms.describeCiphertext(old.CiphertextBlob!).materialVersion).toBe(1);
      expect(kms.describeCiphertext(fresh.CiphertextBlob!).materialVersion).toBe(2);
      const decryptedOld = await client.send(new DecryptCommand({ CiphertextBlob: old.CiphertextBlob }));
      const decryptedNew = await client.send(new DecryptCommand({ CiphertextBlob: fresh.CiphertextBlob }));
      expect(Buffer.from(decryptedOld.Plaintext!).toString()).toBe('old');
      expect(Buffer.from(decryptedNew.Plaintext!).toString()).toBe('new');
      const reencrypted = await client.send(
        new ReEncryptCommand({ CiphertextBlob: old.CiphertextBlob, DestinationKeyId: key.keyId }),
      );
      expect(kms.describeCiphertext(reencrypted.CiphertextBlob!).materialVersion).toBe(2);
    });

    it('takes only a key id or ARN, not an alias', async () => {
      const alias = `alias/rotate-${crypto.randomUUID()}`;
      kms.createKey({ alias });
      await expectKmsError(client.send(new RotateKeyOnDemandCommand({ KeyId: alias })), 'NotFoundException');
    });
  });

  describe('key state', () => {
    it('DisableKey makes every cryptographic operation answer DisabledException until EnableKey', async () => {
      const key = kms.createKey();
      const encrypted = await client.send(new EncryptCommand({ KeyId: key.keyId, Plaintext: bytes(8) }));
      await client.send(new DisableKeyCommand({ KeyId: key.keyId }));
      expect((await client.send(new DescribeKeyCommand({ KeyId: key.keyId }))).KeyMetadata).toMatchObject({
        Enabled: false,
        KeyState: 'Disabled',
      });
      await expectKmsError(
        client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob })),
        'DisabledException',
      );
      await expectKmsError(
        client.send(new EncryptCommand({ KeyId: key.keyId, Plaintext: bytes(8) })),
        'DisabledException',
      );
      await expectKmsError(
        client.send(new GenerateDataKeyCommand({ KeyId: key.keyId, KeySpec: 'AES_256' })),
        'DisabledException',
      );
      await client.send(new EnableKeyCommand({ KeyId: key.arn }));
      await expect(
        client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob })),
      ).resolves.toBeDefined();
    });

    it('ScheduleKeyDeletion puts the key in PendingDeletion: KMSInvalidStateException until cancelled', async () => {
      const key = kms.createKey();
      const encrypted = await client.send(new EncryptCommand({ KeyId: key.keyId, Plaintext: bytes(8) }));
      await expectKmsError(
        client.send(new ScheduleKeyDeletionCommand({ KeyId: key.keyId, PendingWindowInDays: 3 })),
        'ValidationException',
      );
      const scheduled = await client.send(
        new ScheduleKeyDeletionCommand({ KeyId: key.keyId, PendingWindowInDays: 7 }),
      );
      expect(scheduled).toMatchObject({
        KeyId: key.arn,
        KeyState: 'PendingDeletion',
        PendingWindowInDays: 7,
      });
      expect(scheduled.DeletionDate!.getTime()).toBeGreaterThan(Date.now() + 6 * 24 * 3600 * 1000);
      const error = await expectKmsError(
        client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob })),
        'KMSInvalidStateException',
      );
      expect(error.message).toMatch(/pending deletion/);
      await expectKmsError(
        client.send(new EnableKeyCommand({ KeyId: key.keyId })),
        'KMSInvalidStateException',
      );
      expect((await client.send(new DescribeKeyCommand({ KeyId: key.keyId }))).KeyMetadata?.KeyState).toBe(
        'PendingDeletion',
      );
      await client.send(new CancelKeyDeletionCommand({ KeyId: key.keyId }));
      expect(kms.keyState(key.keyId)).toBe('Disabled');
      await client.send(new EnableKeyCommand({ KeyId: key.keyId }));
      await expect(
        client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob })),
      ).resolves.toBeDefined();
    });

    it('denyAll answers AccessDeniedException for every operation on that key only', async () => {
      const [denied, other] = [kms.createKey(), kms.createKey()];
      const encrypted = await client.send(new EncryptCommand({ KeyId: denied.keyId, Plaintext: bytes(8) }));
      kms.setDenyAll(denied.keyId, true);
      await expectKmsError(
        client.send(new DescribeKeyCommand({ KeyId: denied.keyId })),
        'AccessDeniedException',
      );
      await expectKmsError(
        client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob })),
        'AccessDeniedException',
      );
      await expectKmsError(
        client.send(new GenerateDataKeyCommand({ KeyId: denied.arn, KeySpec: 'AES_256' })),
        'AccessDeniedException',
      );
      await expectKmsError(
        client.send(new DisableKeyCommand({ KeyId: denied.keyId })),
        'AccessDeniedException',
      );
      await expect(client.send(new DescribeKeyCommand({ KeyId: other.keyId }))).resolves.toBeDefined();
      kms.setDenyAll(denied.keyId, false);
      await expect(
        client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob })),
      ).resolves.toBeDefined();
    });
  });

  describe('authentication', () => {
    it('answers UnrecognizedClientException for an unknown access key id', async () => {
      const stranger = clientFor(kms, aCredential());
      try {
        await expectKmsError(
          stranger.send(new DescribeKeyCommand({ KeyId: kms.createKey().keyId })),
          'UnrecognizedClientException',
        );
      } finally {
        stranger.destroy();
      }
    });

    it('verifies the SigV4 signature with the secret key', async () => {
      const forger = clientFor(kms, { ...credentials, secretAccessKey: aCredential().secretAccessKey });
      try {
        await expectKmsError(
          forger.send(new DescribeKeyCommand({ KeyId: kms.createKey().keyId })),
          'InvalidSignatureException',
        );
      } finally {
        forger.destroy();
      }
    });

    it('refuses a signature scoped to another region', async () => {
      const elsewhere = clientFor(kms, credentials, { region: 'us-east-2' });
      try {
        await expectKmsError(
          elsewhere.send(new DescribeKeyCommand({ KeyId: kms.createKey().keyId })),
          'InvalidSignatureException',
        );
      } finally {
        elsewhere.destroy();
      }
    });

    it('refuses a request whose signed body was altered', async () => {
      const tamperer = clientFor(kms, credentials);
      tamperer.middlewareStack.add(
        (next) => async (args) => {
          // The SDK hands the signed body on as bytes; same length, other key spec.
          const request = args.request as { body: Uint8Array };
          const { buffer, byteOffset, byteLength } = request.body;
          const text = Buffer.from(buffer, byteOffset, byteLength).toString('utf8');
          expect(text).toContain('AES_256');
          request.body = Buffer.from(text.replace('AES_256', 'AES_128'), 'utf8');
          return next(args);
        },
        { step: 'deserialize', name: 'tamperBody' },
      );
      try {
        await expectKmsError(
          tamperer.send(new GenerateDataKeyCommand({ KeyId: kms.createKey().keyId, KeySpec: 'AES_256' })),
          'InvalidSignatureException',
        );
      } finally {
        tamperer.destroy();
      }
    });

    it('answers MissingAuthenticationTokenException without an Authorization header', async () => {
      const anonymous = clientFor(kms, credentials);
      anonymous.middlewareStack.add(
        (next) => async (args) => {
          delete (args.request as { headers: Record<string, string> }).headers.authorization;
          return next(args);
        },
        { step: 'deserialize', name: 'dropAuthorization' },
      );
      try {
        await expectKmsError(
          anonymous.send(new DescribeKeyCommand({ KeyId: kms.createKey().keyId })),
          'MissingAuthenticationTokenException',
        );
      } finally {
        anonymous.destroy();
      }
    });

    it('accepts any well-formed signature when no credentials are configured', async () => {
      const open = await startKmsEmulator({ region: REGION });
      const anyone = clientFor(open, aCredential());
      try {
        const key = open.createKey();
        await expect(anyone.send(new DescribeKeyCommand({ KeyId: key.keyId }))).resolves.toBeDefined();
      } finally {
        anyone.destroy();
        await open.close();
      }
    });
  });

  describe('fault knobs', () => {
    it('counts requests per operation, faulted or not', async () => {
      const key = kms.createKey();
      const before = { requests: kms.requests, encrypt: kms.callsByOp.Encrypt ?? 0 };
      await client.send(new EncryptCommand({ KeyId: key.keyId, Plaintext: bytes(8) }));
      kms.faults.errorRate = 1;
      await sdkError(client.send(new EncryptCommand({ KeyId: key.keyId, Plaintext: bytes(8) })));
      expect(kms.requests).toBe(before.requests + 2);
      expect(kms.callsByOp.Encrypt).toBe(before.encrypt + 2);
    });

    it('latencyMs delays every answer', async () => {
      const key = kms.createKey();
      kms.faults.latencyMs = 250;
      const started = performance.now();
      await client.send(new DescribeKeyCommand({ KeyId: key.keyId }));
      expect(performance.now() - started).toBeGreaterThanOrEqual(240);
    });

    it('errorRate 1 answers ThrottlingException, which the SDK retries', async () => {
      const key = kms.createKey();
      const retrying = clientFor(kms, credentials, { maxAttempts: 2 });
      kms.faults.errorRate = 1;
      const before = kms.callsByOp.DescribeKey ?? 0;
      try {
        const error = await expectKmsError(
          retrying.send(new DescribeKeyCommand({ KeyId: key.keyId })),
          'ThrottlingException',
        );
        expect(error.$metadata?.attempts).toBe(2);
        expect(kms.callsByOp.DescribeKey).toBe(before + 2);
      } finally {
        retrying.destroy();
      }
    });

    it("errorKind 'internal' answers HTTP 500 KMSInternalException", async () => {
      kms.faults.errorRate = 1;
      kms.faults.errorKind = 'internal';
      try {
        const error = await expectKmsError(
          client.send(new DescribeKeyCommand({ KeyId: kms.createKey().keyId })),
          'KMSInternalException',
          500,
        );
        expect(error.$fault).toBe('server');
      } finally {
        kms.faults.errorKind = 'throttling';
      }
    });

    it('hang holds requests until the client gives up, and clearing it releases held requests', async () => {
      const key = kms.createKey();
      const impatient = clientFor(kms, credentials, {
        requestHandler: { requestTimeout: 300, throwOnRequestTimeout: true },
      });
      kms.faults.hang = true;
      try {
        const timedOut = await sdkError(impatient.send(new DescribeKeyCommand({ KeyId: key.keyId })));
        expect(timedOut.name).toBe('TimeoutError');

        const held = client.send(new DescribeKeyCommand({ KeyId: key.keyId }));
        let settled = false;
        void held.finally(() => (settled = true)).catch(() => undefined);
        await new Promise((resolve) => setTimeout(resolve, 200));
        expect(settled).toBe(false);
        kms.faults.hang = false;
        await expect(held).resolves.toMatchObject({ KeyMetadata: { KeyId: key.keyId } });
      } finally {
        impatient.destroy();
      }
    });

    it('redirectTo answers 307 to the same path at another address, without serving the request', async () => {
      const key = kms.createKey();
      kms.faults.redirectTo = 'http://169.254.169.254/';
      const before = kms.callsByOp.DescribeKey ?? 0;
      try {
        const res = await fetch(kms.url + '/', { method: 'POST', redirect: 'manual', body: '{}' });
        expect({ status: res.status, location: res.headers.get('location') }).toEqual({
          status: 307,
          location: 'http://169.254.169.254/',
        });
        const error = await sdkError(client.send(new DescribeKeyCommand({ KeyId: key.keyId })));
        expect(error.$metadata?.httpStatusCode).toBe(307);
        expect(kms.callsByOp.DescribeKey).toBe(before + 1);
      } finally {
        kms.faults.clear();
      }
      await expect(client.send(new DescribeKeyCommand({ KeyId: key.keyId }))).resolves.toBeDefined();
    });

    it('counts requests per access key id, accepted or not', async () => {
      const stranger = aCredential();
      const key = kms.createKey();
      await client.send(new DescribeKeyCommand({ KeyId: key.keyId }));
      await sdkError(clientFor(kms, stranger).send(new DescribeKeyCommand({ KeyId: key.keyId })));
      expect(kms.callsByAccessKeyId[stranger.accessKeyId]).toBe(1);
      expect(kms.callsByAccessKeyId[credentials.accessKeyId]).toBeGreaterThan(0);
    });

    it('close() ends requests held by hang', async () => {
      const other = await startKmsEmulator({ region: REGION });
      const otherClient = clientFor(other, aCredential());
      const key = other.createKey();
      other.faults.hang = true;
      const held = otherClient.send(new DescribeKeyCommand({ KeyId: key.keyId }));
      await new Promise((resolve) => setTimeout(resolve, 100));
      await other.close();
      const error = await sdkError(held);
      expect(error.$metadata?.httpStatusCode).toBeUndefined();
      otherClient.destroy();
    });
  });
});

describe('KMS emulator restarts', () => {
  const credentials = aCredential();

  it('loses every key without state, and keeps them (old ciphertexts decrypt) when started from a snapshot', async () => {
    const first = await startKmsEmulator({ region: REGION, credentials: [credentials] });
    const key = first.createKey({ alias: 'alias/kept' });
    const c1 = clientFor(first, credentials);
    const context = { purpose: 'restart' };
    const { CiphertextBlob } = await c1.send(
      new EncryptCommand({ KeyId: key.keyId, Plaintext: bytes(32), EncryptionContext: context }),
    );
    const backup = first.snapshot();
    const port = first.port;
    await first.close();
    c1.destroy();

    const empty = await startKmsEmulator({ port, region: REGION, credentials: [credentials] });
    const c2 = clientFor(empty, credentials);
    await expectKmsError(
      c2.send(new DecryptCommand({ CiphertextBlob, EncryptionContext: context })),
      'InvalidCiphertextException',
    );
    await expectKmsError(c2.send(new DescribeKeyCommand({ KeyId: key.keyId })), 'NotFoundException');
    await empty.close();
    c2.destroy();

    const restored = await startKmsEmulator({
      port,
      region: REGION,
      credentials: [credentials],
      state: backup,
    });
    const c3 = clientFor(restored, credentials);
    await expect(
      c3.send(new DecryptCommand({ CiphertextBlob, EncryptionContext: context })),
    ).resolves.toMatchObject({
      KeyId: key.arn,
    });
    await expect(c3.send(new DescribeKeyCommand({ KeyId: 'alias/kept' }))).resolves.toMatchObject({
      KeyMetadata: { KeyId: key.keyId },
    });
    await restored.close();
    c3.destroy();
  });

  it('accepts credentials added later, with their session token', async () => {
    const kms = await startKmsEmulator({ region: REGION, credentials: [credentials] });
    const temporary = { ...aCredential(), sessionToken: crypto.randomBytes(32).toString('base64') };
    const key = kms.createKey();
    const late = clientFor(kms, temporary);
    await expectKmsError(
      late.send(new DescribeKeyCommand({ KeyId: key.keyId })),
      'UnrecognizedClientException',
    );
    kms.addCredentials(temporary);
    await expect(late.send(new DescribeKeyCommand({ KeyId: key.keyId }))).resolves.toBeDefined();
    const withoutToken = clientFor(kms, {
      accessKeyId: temporary.accessKeyId,
      secretAccessKey: temporary.secretAccessKey,
    });
    await expectKmsError(
      withoutToken.send(new DescribeKeyCommand({ KeyId: key.keyId })),
      'UnrecognizedClientException',
    );
    late.destroy();
    withoutToken.destroy();
    await kms.close();
  });
});
