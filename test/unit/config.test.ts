import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, describeConfig, loadConfig, variables } from '../../src/config/config.js';

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
    const c = loadConfig({
      DATABASE_URL: 'postgres://u:pw-secret@h/db',
      REDIS_URL: 'redis://:r-secret@h',
      CUSTOS_ROOT_KEYS: 'v1:xyz',
    });
    const printed = JSON.stringify(describeConfig(c));
    for (const s of ['pw-secret', 'r-secret', 'v1:xyz']) expect(printed).not.toContain(s);
  });

  it('flags every secret-bearing variable as sensitive', () => {
    const sensitive = Object.entries(variables)
      .filter(([, v]) => v.sensitive)
      .map(([k]) => k)
      .sort();
    expect(sensitive).toEqual([
      'CUSTOS_BOOTSTRAP_ADMIN_KEY',
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

describe('the README', () => {
  it('documents every variable in its configuration table', () => {
    const readme = fs.readFileSync(path.join(__dirname, '../../README.md'), 'utf8');
    for (const name of Object.keys(variables)) expect(readme).toContain(`| \`${name}\``);
  });
});
