import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { packageRoot } from '../../../src/common/paths.js';
import { ProviderCatalog, publicProviderView } from '../../../src/providers/provider-catalog.js';
import { parseProviderDefinition } from '../../../src/providers/provider-definition.js';

const providersDir = path.join(packageRoot, 'providers');

const REQUIRED_PROVIDERS = [
  'github',
  'google',
  'microsoft',
  'salesforce',
  'slack',
  'atlassian',
  'hubspot',
  'notion',
  'snowflake',
  'databricks',
  'servicenow',
  'zendesk',
  'linear',
  'gitlab',
  'dropbox',
  'box',
  'openai',
  'anthropic',
  'stripe',
  'datadog',
];

describe('the shipped provider files', () => {
  it.each(REQUIRED_PROVIDERS)('include %s', async (key) => {
    const files = await readdir(providersDir);
    expect(files).toContain(`${key}.yaml`);
  });

  it('each validate and are named after their key', async () => {
    const files = (await readdir(providersDir)).filter((f) => f.endsWith('.yaml'));
    expect(files.length).toBeGreaterThanOrEqual(24);
    for (const file of files) {
      const def = parseProviderDefinition(parse(await readFile(path.join(providersDir, file), 'utf8')));
      expect(`${def.key}.yaml`).toBe(file);
    }
  });
});

describe('ProviderCatalog.load', () => {
  it('loads at least 20 providers with unique keys, sorted by key', async () => {
    const catalog = await ProviderCatalog.load();
    const keys = catalog.list().map((d) => d.key);
    expect(keys.length).toBeGreaterThanOrEqual(20);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys).toEqual([...keys].sort());
    expect(keys).toEqual(expect.arrayContaining(REQUIRED_PROVIDERS));
  });

  it('returns definitions by key, with defaults applied', async () => {
    const catalog = await ProviderCatalog.load();
    const google = catalog.get('google');
    expect(google?.oauth2?.authorizationParams).toEqual({ access_type: 'offline', prompt: 'consent' });
    expect(google?.oauth2?.issuer).toBe('https://accounts.google.com');
    expect(catalog.get('anthropic')?.apiKey?.verify?.headers).toEqual({ 'anthropic-version': '2023-06-01' });
    expect(catalog.get('nope')).toBeUndefined();
  });

  it('hands out frozen definitions', async () => {
    const catalog = await ProviderCatalog.load();
    const github = catalog.get('github');
    expect(Object.isFrozen(github)).toBe(true);
    expect(Object.isFrozen(github?.oauth2?.scopes)).toBe(true);
  });

  it('gives the OpenID providers with a fixed issuer a jwksUri, so their ID tokens are verified', async () => {
    const catalog = await ProviderCatalog.load();
    const openid = catalog
      .list()
      .filter((d) => d.oauth2?.scopes.includes('openid') && d.oauth2.issuer !== undefined);
    expect(openid.map((d) => d.key)).toEqual(expect.arrayContaining(['google', 'xero']));
    for (const def of openid)
      expect({ key: def.key, jwksUri: def.oauth2?.jwksUri }).toEqual({
        key: def.key,
        jwksUri: expect.stringMatching(/^https:\/\//),
      });
    expect(catalog.get('google')?.oauth2?.jwksUri).toBe('https://www.googleapis.com/oauth2/v3/certs');
    // Microsoft's issuer is tenant-specific: no fixed issuer, so no ID token is read.
    expect(catalog.get('microsoft')?.oauth2?.jwksUri).toBeUndefined();
  });

  it('declares every templated host in connectionConfig', async () => {
    const catalog = await ProviderCatalog.load();
    for (const key of ['snowflake', 'databricks', 'servicenow', 'zendesk']) {
      const def = catalog.get(key);
      expect(def?.connectionConfig?.length).toBeGreaterThan(0);
      expect(def?.oauth2?.tokenUrl).toMatch(/^https:\/\/\{[a-z]+\}\./);
    }
  });

  describe('with a bad folder', () => {
    let dir: string;
    const valid = (key: string) =>
      `key: ${key}\nname: ${key}\nauthMode: api_key\napiKey:\n  verify:\n    url: https://api.${key}.example/me\n`;

    beforeEach(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'custos-providers-'));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('refuses a file whose name does not match its key', async () => {
      await writeFile(path.join(dir, 'acme.yaml'), valid('other'));
      await expect(ProviderCatalog.load(dir)).rejects.toThrow(/acme\.yaml.*must be named other\.yaml/);
    });

    it('refuses an invalid definition, naming the file and the path', async () => {
      await writeFile(path.join(dir, 'acme.yaml'), `${valid('acme')}colour: blue\n`);
      await expect(ProviderCatalog.load(dir)).rejects.toThrow(/acme\.yaml: .*at colour: unknown field/);
    });

    it('refuses a file that is not YAML', async () => {
      await writeFile(path.join(dir, 'acme.yaml'), 'key: [unclosed\n');
      await expect(ProviderCatalog.load(dir)).rejects.toThrow(/acme\.yaml is not valid YAML/);
    });

    it('refuses a YAML file with a repeated field', async () => {
      await writeFile(path.join(dir, 'acme.yaml'), `${valid('acme')}name: again\n`);
      await expect(ProviderCatalog.load(dir)).rejects.toThrow(/acme\.yaml is not valid YAML/);
    });

    it('ignores files that are not *.yaml and sorts by key', async () => {
      await writeFile(path.join(dir, 'b.yaml'), valid('b'));
      await writeFile(path.join(dir, 'a-b.yaml'), valid('a-b'));
      await writeFile(path.join(dir, 'a.yaml'), valid('a'));
      await writeFile(path.join(dir, 'README.md'), '# not a provider');
      const catalog = await ProviderCatalog.load(dir);
      expect(catalog.list().map((d) => d.key)).toEqual(['a', 'a-b', 'b']);
    });
  });
});

describe('publicProviderView', () => {
  it('shows what a client needs for an OAuth provider and nothing about how Custos calls it', async () => {
    const catalog = await ProviderCatalog.load();
    const google = catalog.get('google');
    if (google === undefined) throw new Error('google missing');
    expect(publicProviderView(google)).toEqual({
      key: 'google',
      name: 'Google',
      authMode: 'oauth2',
      docsUrl: 'https://developers.google.com/identity/protocols/oauth2/web-server',
      scopes: ['openid', 'email', 'profile'],
      oauth2: {
        authorizationUrl: 'https://accounts.google.com/o/oauth2/v2/auth',
        tokenUrl: 'https://oauth2.googleapis.com/token',
        revocationUrl: 'https://oauth2.googleapis.com/revoke',
        issuer: 'https://accounts.google.com',
        scopeSeparator: ' ',
        pkce: true,
        rotatesRefreshToken: false,
      },
    });
  });

  it('shows connection parameters and no verify request for the other kinds', async () => {
    const catalog = await ProviderCatalog.load();
    const zendesk = catalog.get('zendesk');
    const openai = catalog.get('openai');
    if (zendesk === undefined || openai === undefined) throw new Error('provider missing');
    expect(publicProviderView(zendesk).connectionConfig?.[0]?.key).toBe('subdomain');
    expect(publicProviderView(openai)).toEqual({
      key: 'openai',
      name: 'OpenAI',
      authMode: 'api_key',
      docsUrl: 'https://platform.openai.com/docs/api-reference/authentication',
      scopes: [],
    });
  });
});
