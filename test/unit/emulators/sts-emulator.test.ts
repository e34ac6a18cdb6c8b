/**
 * The STS emulator, driven only through the real @aws-sdk/client-sts (query protocol, XML) over HTTP on
 * 127.0.0.1: AssumeRole with its trust checks (caller, external id), the credentials it issues, SigV4 and errors.
 */
import crypto from 'node:crypto';
import { AssumeRoleCommand, STSClient } from '@aws-sdk/client-sts';
import type { KmsEmulatorCredentials } from '../../emulators/kms-emulator.js';
import { startStsEmulator, type StsEmulator } from '../../emulators/sts-emulator.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const aCredential = (): KmsEmulatorCredentials => ({
  accessKeyId: `AKIA${crypto.randomBytes(8).toString('hex').toUpperCase()}`,
  secretAccessKey: crypto.randomBytes(30).toString('base64'),
});
const caller = aCredential();
const ROLE = 'arn:aws:iam::444455556666:role/custos-access';
const issued: Required<KmsEmulatorCredentials>[] = [];
let sts: StsEmulator;
let client: STSClient;

beforeAll(async () => {
  sts = await startStsEmulator({ region: 'eu-west-1', callers: [caller], onIssue: (c) => issued.push(c) });
  sts.addRole(ROLE, { trustedCallers: [caller.accessKeyId], externalId: 'custos:tenant-a' });
  client = new STSClient({ region: 'eu-west-1', endpoint: sts.url, credentials: caller, maxAttempts: 1 });
});
afterAll(async () => {
  client.destroy();
  await sts.close();
});

const assume = (c: STSClient, externalId?: string, roleArn = ROLE) =>
  c.send(new AssumeRoleCommand({ RoleArn: roleArn, RoleSessionName: 'custos-test', ExternalId: externalId }));

async function stsError(promise: Promise<unknown>): Promise<{ name: string; status?: number }> {
  const error = (await promise.then(
    () => undefined,
    (e: unknown) => e,
  )) as { name: string; $metadata?: { httpStatusCode?: number } } | undefined;
  expect(error).toBeDefined();
  return { name: error!.name, status: error!.$metadata?.httpStatusCode };
}

describe('STS emulator through @aws-sdk/client-sts', () => {
  it('issues temporary credentials for a trusted caller with the right external id', async () => {
    const out = await assume(client, 'custos:tenant-a');
    expect(out.Credentials).toMatchObject({
      AccessKeyId: expect.stringMatching(/^ASIA[0-9A-F]{16}$/),
      SecretAccessKey: expect.any(String),
      SessionToken: expect.any(String),
    });
    expect(out.Credentials!.Expiration!.getTime()).toBeGreaterThan(Date.now() + 3000_000);
    expect(out.AssumedRoleUser?.Arn).toBe('arn:aws:sts::444455556666:assumed-role/custos-access/custos-test');
    expect(issued.at(-1)).toMatchObject({ accessKeyId: out.Credentials!.AccessKeyId });
    expect(sts.issued.at(-1)).toMatchObject({ roleArn: ROLE, externalId: 'custos:tenant-a' });
  });

  it('denies a wrong or missing external id, an unknown role and an untrusted caller', async () => {
    const count = sts.issued.length;
    expect(await stsError(assume(client, 'custos:tenant-b'))).toEqual({ name: 'AccessDenied', status: 403 });
    expect(await stsError(assume(client))).toEqual({ name: 'AccessDenied', status: 403 });
    expect(await stsError(assume(client, 'custos:tenant-a', 'arn:aws:iam::444455556666:role/other'))).toEqual(
      {
        name: 'AccessDenied',
        status: 403,
      },
    );
    const stranger = aCredential();
    sts.addRole('arn:aws:iam::444455556666:role/open', { trustedCallers: [caller.accessKeyId] });
    const other = new STSClient({
      region: 'eu-west-1',
      endpoint: sts.url,
      credentials: stranger,
      maxAttempts: 1,
    });
    expect(await stsError(assume(other, undefined, 'arn:aws:iam::444455556666:role/open'))).toEqual({
      name: 'InvalidClientTokenId',
      status: 403,
    });
    other.destroy();
    expect(sts.issued.length).toBe(count);
  });

  it('verifies the signature and its scope', async () => {
    const forged = new STSClient({
      region: 'eu-west-1',
      endpoint: sts.url,
      credentials: { accessKeyId: caller.accessKeyId, secretAccessKey: 'wrong' + caller.secretAccessKey },
      maxAttempts: 1,
    });
    expect(await stsError(assume(forged, 'custos:tenant-a'))).toEqual({
      name: 'SignatureDoesNotMatch',
      status: 403,
    });
    forged.destroy();
    const elsewhere = new STSClient({
      region: 'us-east-1',
      endpoint: sts.url,
      credentials: caller,
      maxAttempts: 1,
    });
    expect(await stsError(assume(elsewhere, 'custos:tenant-a'))).toEqual({
      name: 'SignatureDoesNotMatch',
      status: 403,
    });
    elsewhere.destroy();
  });

  it('validates its input as STS does', async () => {
    const bad = client.send(
      new AssumeRoleCommand({ RoleArn: ROLE, RoleSessionName: 'x y', ExternalId: 'custos:tenant-a' }),
    );
    expect(await stsError(bad)).toEqual({ name: 'ValidationError', status: 400 });
  });

  it('has the common fault knobs', async () => {
    sts.faults.errorRate = 1;
    try {
      expect(await stsError(assume(client, 'custos:tenant-a'))).toMatchObject({ status: 500 });
    } finally {
      sts.faults.clear();
    }
    expect(sts.callsByOp.AssumeRole).toBeGreaterThan(0);
  });
});
