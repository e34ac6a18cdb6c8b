/**
 * Whose AWS identity signs a tenant's KMS calls. A tenant never borrows Custos's own: it brings credentials, or a
 * role that Custos assumes through the operator's STS endpoint with an external id bound to the tenant, or uses a
 * key ARN the operator allow-listed for Custos's own identity. Custos's identity (or a role's) never goes to an
 * endpoint the tenant chose, and the instance-metadata service is never asked on a tenant's behalf. Everything
 * runs through the real @aws-sdk/client-kms and @aws-sdk/client-sts against the KMS and STS emulators.
 */
import { randomBytes } from 'node:crypto';
import { ConnectionsService } from '../../../src/connections/connections.service.js';
import { DataKeyService } from '../../../src/crypto/data-key.service.js';
import { KeyBackends } from '../../../src/crypto/key-backends.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, uniqueSecret, type TenantFixture } from '../../support/factories.js';
import { startKmsEmulator, type KmsEmulator } from '../../emulators/kms-emulator.js';
import { startStsEmulator, type StsEmulator } from '../../emulators/sts-emulator.js';
import { startTrap, type Trap } from '../../support/aws.js';

const aCredential = () => ({
  accessKeyId: 'AKIA' + randomBytes(8).toString('hex').toUpperCase(),
  secretAccessKey: randomBytes(30).toString('base64'),
});
/** Custos's own AWS identity (what the default provider chain finds: here, the environment). */
const operator = aCredential();
/** A tenant's own IAM user. */
const tenantUser = aCredential();
const REGION = 'us-east-1';
const ROLE = (name: string) => `arn:aws:iam::444455556666:role/${name}`;

let app: TestApp;
let kms: KmsEmulator;
let sts: StsEmulator;
let tenantEndpoint: Trap;
let imds: Trap;
let ambientKey: { keyId: string; arn: string };
const savedEnv = { ...process.env };

beforeAll(async () => {
  kms = await startKmsEmulator({ region: REGION, credentials: [operator, tenantUser] });
  sts = await startStsEmulator({
    region: REGION,
    callers: [operator],
    onIssue: (c) => kms.addCredentials(c),
  });
  tenantEndpoint = await startTrap('application/x-amz-json-1.1');
  imds = await startTrap('application/x-amz-json-1.1');
  ambientKey = kms.createKey();
  // Custos's identity is in the environment; the instance-metadata service is a trap that must stay silent.
  process.env.AWS_ACCESS_KEY_ID = operator.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = operator.secretAccessKey;
  delete process.env.AWS_EC2_METADATA_DISABLED;
  process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = imds.url;
  process.env.AWS_EC2_METADATA_V1_DISABLED = 'false';
  app = await startTestApp({
    CUSTOS_OUTBOUND_ALLOW_HOSTS: [kms.port, sts.port, tenantEndpoint.port]
      .map((p) => `127.0.0.1:${p}`)
      .join(','),
    CUSTOS_KEY_BACKEND_TIMEOUT_MS: '2000',
    CUSTOS_AWS_KMS_ENDPOINT: kms.url,
    CUSTOS_AWS_STS_ENDPOINT: sts.url,
    CUSTOS_AWS_AMBIENT_KEY_ARNS: `arn:aws:kms:${REGION}:111122223333:key/00000000-0000-0000-0000-000000000000,${ambientKey.arn}`,
  });
});
afterAll(async () => {
  await app.close();
  await kms.close();
  await sts.close();
  await tenantEndpoint.close();
  await imds.close();
  process.env = savedEnv;
});

const put = (t: TenantFixture, body: Record<string, unknown>) =>
  app.request('PUT', `/v1/tenants/${t.tenantId}/key-backend`, { key: t.adminKey, body });
const refusal = (res: { status: number; body: { error?: string; details?: { reason?: string } } }) => ({
  status: res.status,
  error: res.body.error,
  reason: res.body.details?.reason,
});
const operatorCalls = () => kms.callsByAccessKeyId[operator.accessKeyId] ?? 0;

async function roundTrip(t: TenantFixture): Promise<void> {
  const secret = uniqueSecret('tok');
  const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/users/u/connections/github`, {
    key: t.adminKey,
    body: { type: 'oauth2', accessToken: secret },
  });
  expect(res.status).toBeLessThan(300);
  app.custos.app.get(DataKeyService).flushTenant(t.tenantId);
  const opened = await app.custos.app.get(ConnectionsService).openCredential(t.tenantId, res.body.id);
  expect(opened.secret).toBe(secret);
}

describe('a tenant without credentials of its own', () => {
  it('cannot send Custos’s signature to an endpoint it chose (400, nothing sent, metadata service untouched)', async () => {
    const t = await createTenant(app);
    const res = await put(t, {
      type: 'aws-kms',
      keyId: ambientKey.arn,
      region: REGION,
      endpoint: tenantEndpoint.url,
    });
    expect(refusal(res)).toEqual({
      status: 400,
      error: 'key_backend_invalid',
      reason: 'operator_identity_with_endpoint',
    });
    expect(tenantEndpoint.received).toEqual([]);
    expect(imds.received).toEqual([]);
  });

  it('never makes the SDK look for an identity on its behalf: the metadata service is not asked', async () => {
    const t = await createTenant(app);
    // Without an identity in the environment, the SDK's default chain would end at the metadata service.
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    try {
      const custom = await put(t, {
        type: 'aws-kms',
        keyId: kms.createKey().arn,
        region: REGION,
        endpoint: kms.url,
      });
      expect(refusal(custom)).toMatchObject({ status: 400, error: 'key_backend_invalid' });
      const plain = await put(t, { type: 'aws-kms', keyId: kms.createKey().arn, region: REGION });
      expect(refusal(plain)).toMatchObject({ status: 400, error: 'key_backend_invalid' });
    } finally {
      process.env.AWS_ACCESS_KEY_ID = operator.accessKeyId;
      process.env.AWS_SECRET_ACCESS_KEY = operator.secretAccessKey;
    }
    expect(imds.received).toEqual([]);
  });

  it('cannot use Custos’s identity for a key the operator did not allow-list (aliases included)', async () => {
    const t = await createTenant(app);
    const other = kms.createKey({ alias: `alias/a-${randomBytes(4).toString('hex')}` });
    const before = kms.requests;
    for (const keyId of [other.arn, other.keyId, ambientKey.keyId]) {
      expect(refusal(await put(t, { type: 'aws-kms', keyId, region: REGION }))).toEqual({
        status: 400,
        error: 'key_backend_invalid',
        reason: 'ambient_identity_not_allowed',
      });
    }
    expect(kms.requests).toBe(before);
    expect(imds.received).toEqual([]);
  });

  it('refuses a configuration stored before these rules when it is loaded, without signing anything', async () => {
    const t = await createTenant(app);
    const id = randomBytes(16)
      .toString('hex')
      .replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');
    await app.custos.runtime.dataSource.query(
      `INSERT INTO tenant_key_backends (id, tenant_id, type, settings) VALUES ($1, $2, 'aws-kms', $3)`,
      [
        id,
        t.tenantId,
        JSON.stringify({ keyId: ambientKey.arn, region: REGION, endpoint: tenantEndpoint.url }),
      ],
    );
    await expect(app.custos.app.get(KeyBackends).byId(t.tenantId, id)).rejects.toMatchObject({
      code: 'key_unavailable',
      details: { reason: 'misconfigured' },
    });
    expect(tenantEndpoint.received).toEqual([]);
    expect(imds.received).toEqual([]);
  });
});

describe('a tenant with its own credentials', () => {
  it('signs with them only, also at an endpoint it chose, and never asks the metadata service', async () => {
    const t = await createTenant(app);
    const key = kms.createKey();
    const before = operatorCalls();
    const res = await put(t, {
      type: 'aws-kms',
      keyId: key.arn,
      region: REGION,
      endpoint: kms.url,
      credentials: tenantUser,
    });
    expect(res.status).toBe(200);
    expect(res.body.settings).toMatchObject({ identity: 'static', accessKeyId: tenantUser.accessKeyId });
    await roundTrip(t);
    expect(operatorCalls()).toBe(before);
    expect(imds.received).toEqual([]);
  });

  it('may not also name a role', async () => {
    const t = await createTenant(app);
    const res = await put(t, {
      type: 'aws-kms',
      keyId: kms.createKey().arn,
      region: REGION,
      credentials: tenantUser,
      assumeRole: { roleArn: ROLE('custos') },
    });
    expect(refusal(res)).toMatchObject({ status: 400, error: 'validation_failed' });
  });
});

describe('a tenant with a role for Custos to assume', () => {
  it('gets its KMS calls signed by the role, assumed with an external id bound to the tenant', async () => {
    const t = await createTenant(app);
    const view = await app.request('GET', `/v1/tenants/${t.tenantId}/key-backend`, { key: t.adminKey });
    const externalId = view.body.awsExternalId as string;
    expect(externalId).toContain(t.tenantId);
    const roleArn = ROLE(`tenant-${randomBytes(4).toString('hex')}`);
    sts.addRole(roleArn, { trustedCallers: [operator.accessKeyId], externalId });
    const key = kms.createKey();
    const kmsOperatorBefore = operatorCalls();
    const res = await put(t, { type: 'aws-kms', keyId: key.arn, region: REGION, assumeRole: { roleArn } });
    expect(res.status).toBe(200);
    expect(res.body.settings).toMatchObject({ identity: 'assume-role', roleArn, externalId });
    await roundTrip(t);
    const issued = sts.issued.filter((i) => i.roleArn === roleArn);
    expect(issued.length).toBeGreaterThan(0);
    expect(issued.every((i) => i.externalId === externalId && i.caller === operator.accessKeyId)).toBe(true);
    // KMS saw the role's temporary credentials, never Custos's own.
    expect(issued.some((i) => (kms.callsByAccessKeyId[i.accessKeyId] ?? 0) > 0)).toBe(true);
    expect(operatorCalls()).toBe(kmsOperatorBefore);
    expect(imds.received).toEqual([]);
  });

  it('cannot use another tenant’s role: the external id is Custos’s, not the tenant’s, to choose', async () => {
    const victim = await createTenant(app);
    const victimView = await app.request('GET', `/v1/tenants/${victim.tenantId}/key-backend`, {
      key: victim.adminKey,
    });
    const roleArn = ROLE(`victim-${randomBytes(4).toString('hex')}`);
    sts.addRole(roleArn, {
      trustedCallers: [operator.accessKeyId],
      externalId: victimView.body.awsExternalId,
    });
    const attacker = await createTenant(app);
    const key = kms.createKey();
    const res = await put(attacker, {
      type: 'aws-kms',
      keyId: key.arn,
      region: REGION,
      assumeRole: { roleArn },
    });
    expect(refusal(res)).toEqual({ status: 400, error: 'key_backend_denied', reason: 'denied' });
    expect(sts.issued.filter((i) => i.roleArn === roleArn)).toEqual([]);
    const smuggled = await put(attacker, {
      type: 'aws-kms',
      keyId: key.arn,
      region: REGION,
      assumeRole: { roleArn, externalId: victimView.body.awsExternalId },
    });
    expect(refusal(smuggled)).toMatchObject({ status: 400, error: 'unknown_field' });
  });

  it('is never combined with an endpoint the tenant chose', async () => {
    const t = await createTenant(app);
    const stsBefore = sts.requests;
    const res = await put(t, {
      type: 'aws-kms',
      keyId: kms.createKey().arn,
      region: REGION,
      endpoint: tenantEndpoint.url,
      assumeRole: { roleArn: ROLE('custos') },
    });
    expect(refusal(res)).toEqual({
      status: 400,
      error: 'key_backend_invalid',
      reason: 'operator_identity_with_endpoint',
    });
    expect(sts.requests).toBe(stsBefore);
    expect(tenantEndpoint.received).toEqual([]);
  });
});

describe('a key the operator allow-listed for Custos’s own identity', () => {
  it('is used with Custos’s identity at the operator’s endpoint', async () => {
    const t = await createTenant(app);
    const before = operatorCalls();
    const res = await put(t, { type: 'aws-kms', keyId: ambientKey.arn, region: REGION });
    expect(res.status).toBe(200);
    expect(res.body.settings).toMatchObject({ identity: 'ambient', keyId: ambientKey.arn });
    expect(res.body.settings.endpoint).toBeUndefined();
    await roundTrip(t);
    expect(operatorCalls()).toBeGreaterThan(before);
    // Custos's identity came from the environment: the metadata service was never asked.
    expect(imds.received).toEqual([]);
  });
});
