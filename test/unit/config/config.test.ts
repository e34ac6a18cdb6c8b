import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, describeConfig, loadConfig, variables } from '../../../src/config/config.js';
import { packageRoot } from '../../../src/common/paths.js';
import { RootKeyring } from '../../../src/common/root-keyring.js';

describe('loadConfig', () => {
  it('gives the embedded defaults with no environment', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      host: '127.0.0.1',
      port: 8080,
      publicUrl: 'http://127.0.0.1:8080',
      databaseUrl: undefined,
      redisUrl: undefined,
      rootKeys: undefined,
      migrationsRun: true,
      dataKeyCacheTtlSeconds: 300,
      outboundAllowHosts: [],
    });
    expect(c.dataDir.endsWith('.custos')).toBe(true);
  });

  it.each([
    ['PORT', 'eighty'],
    ['PORT', '70000'],
    ['CUSTOS_DATA_KEY_CACHE_TTL_SECONDS', '-1'],
    ['CUSTOS_MIGRATIONS_RUN', 'maybe'],
    ['CUSTOS_LOG_LEVEL', 'loud'],
    ['CUSTOS_PUBLIC_URL', 'not a url'],
    ['CUSTOS_OUTBOUND_ALLOW_HOSTS', 'http://x/'],
  ])('fails fast naming %s when it is %j', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(name));
  });

  it('never shows a sensitive value, in errors or when printed', () => {
    const secret = 'short-secret-value';
    let message = '';
    try {
      loadConfig({ CUSTOS_BOOTSTRAP_ADMIN_KEY: secret });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/CUSTOS_BOOTSTRAP_ADMIN_KEY/);
    expect(message).not.toContain(secret);
    // (A root keyring is now parsed when the configuration loads, so the spec here must be a real one.)
    const rootKeys = RootKeyring.generateSpec();
    const c = loadConfig({
      DATABASE_URL: 'postgres://u:pw-secret@h/db',
      REDIS_URL: 'redis://:r-secret@h',
      CUSTOS_ROOT_KEYS: rootKeys,
    });
    const printed = JSON.stringify(describeConfig(c));
    for (const s of ['pw-secret', 'r-secret', rootKeys, rootKeys.slice(3)]) expect(printed).not.toContain(s);
  });

  it.each([
    ['CUSTOS_ROOT_KEYS', 'v1:c2VjcmV0LWJ1dC1zaG9ydA=='],
    ['CUSTOS_ROOT_KEYS', `${RootKeyring.generateSpec()},v1:c2VjcmV0LWJ1dC1zaG9ydA==`],
    ['DATABASE_URL', 'mysql://u:c2VjcmV0LWJ1dC1zaG9ydA@h/db'],
    ['DATABASE_URL', 'c2VjcmV0LWJ1dC1zaG9ydA'],
    ['REDIS_URL', 'http://:c2VjcmV0LWJ1dC1zaG9ydA@h'],
    ['CUSTOS_BOOTSTRAP_ADMIN_KEY', 'c2VjcmV0LWJ1dC1zaG9ydA c2VjcmV0LWJ1dC1zaG9ydA'],
    ['CUSTOS_BOOTSTRAP_ADMIN_KEY', 'c2VjcmV0LWJ1dC1zaG9ydA\u00e9c2VjcmV0LWJ1dC1zaG9ydA'],
  ])('validates %s when it loads, naming it and never quoting the value', (name, value) => {
    let error: unknown;
    try {
      loadConfig({ [name]: value });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    expect(message.startsWith(`${name} is invalid`)).toBe(true);
    expect(message).not.toContain('c2VjcmV0LWJ1dC1zaG9ydA');
    expect(message).not.toContain('\n');
  });

  it.each([
    ['HOST', 'bad host!'],
    ['CUSTOS_PUBLIC_URL', 'ftp://custos.example'],
    ['CUSTOS_DATA_DIR', 'data\u0000dir'],
  ])('refuses %s = %j', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`^${name} is invalid`));
  });

  it('accepts what deployments use: postgres and redis URLs, IPv6 hosts, a strong bootstrap key', () => {
    const c = loadConfig({
      HOST: '::',
      DATABASE_URL: 'postgresql://custos@db.internal:5432/custos?sslmode=require',
      REDIS_URL: 'rediss://:pw@redis.internal:6380/0',
      CUSTOS_PUBLIC_URL: 'https://custos.example.com',
      CUSTOS_BOOTSTRAP_ADMIN_KEY: 'cak_' + 'A'.repeat(40),
      CUSTOS_ROOT_KEYS: `${RootKeyring.generateSpec()},${RootKeyring.generateSpec().replace('v1', 'v2')}`,
    });
    expect(c.host).toBe('::');
  });

  it('flags every secret-bearing variable as sensitive', () => {
    const sensitive = Object.entries(variables)
      .filter(([, v]) => v.sensitive)
      .map(([k]) => k)
      .sort();
    expect(sensitive).toEqual([
      'CUSTOS_AUDIT_FORWARD_SECRET',
      'CUSTOS_BOOTSTRAP_ADMIN_KEY',
      'CUSTOS_MIGRATION_DATABASE_URL',
      'CUSTOS_ROOT_KEYS',
      'DATABASE_URL',
      'REDIS_URL',
    ]);
  });

  it('parses the outbound allow-list', () => {
    expect(
      loadConfig({ CUSTOS_OUTBOUND_ALLOW_HOSTS: 'localhost:8443, idp.internal' }).outboundAllowHosts,
    ).toEqual(['localhost:8443', 'idp.internal']);
  });
});

describe('the configuration reference (docs/configuration.md)', () => {
  it('documents every variable in its table', () => {
    const reference = fs.readFileSync(path.join(packageRoot, 'docs/configuration.md'), 'utf8');
    for (const name of Object.keys(variables)) expect(reference).toContain(`| \`${name}\``);
  });
});

describe('CUSTOS_AUDIT_FORWARD', () => {
  it('masks the forwarding secret when the configuration is printed', () => {
    const config = loadConfig({
      CUSTOS_AUDIT_FORWARD: 'https://siem.example.com/in',
      CUSTOS_AUDIT_FORWARD_SECRET: 'forward-secret-0123456789abcdef0123456789',
    });
    expect(config.auditForward).toMatchObject({ to: 'webhook', url: 'https://siem.example.com/in' });
    expect(JSON.stringify(describeConfig(config))).not.toContain('forward-secret-0123456789');
  });
});

describe('CUSTOS_MIGRATION_DATABASE_URL', () => {
  it('is taken with DATABASE_URL, and masked when the configuration is printed', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgres://app@db/custos',
      CUSTOS_MIGRATION_DATABASE_URL: 'postgres://owner:s3cret@db/custos',
    });
    expect(config.migrationDatabaseUrl).toBe('postgres://owner:s3cret@db/custos');
    expect(JSON.stringify(describeConfig(config))).not.toContain('s3cret');
  });

  it('is refused without DATABASE_URL (the embedded PostgreSQL has one role)', () => {
    expect(() => loadConfig({ CUSTOS_MIGRATION_DATABASE_URL: 'postgres://owner@db/custos' })).toThrow(
      /CUSTOS_MIGRATION_DATABASE_URL needs DATABASE_URL/,
    );
  });
});
