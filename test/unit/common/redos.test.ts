/**
 * ReDoS check of every regular expression in src (literals and `new RegExp('…')`, found with the TypeScript
 * parser so a new one is covered without listing it) and of every pattern the exported zod schemas carry
 * (including zod's own formats: uuid, url, datetime, …), with recheck: neither exponential nor polynomial
 * backtracking is accepted. (Tenants' own connection-config patterns are checked at save time instead.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { check } from 'recheck';
import ts from 'typescript';
import { z } from 'zod';

const SRC = path.join(__dirname, '../../../src');

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

interface Found {
  where: string;
  regex: RegExp;
}

/** Regex literals and `new RegExp(<string literal>, <string literal>?)` in one file. */
function regexesIn(file: string): Found[] {
  const text = fs.readFileSync(file, 'utf8');
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const found: Found[] = [];
  const where = (node: ts.Node) =>
    `${path.relative(SRC, file)}:${sf.getLineAndCharacterOfPosition(node.getStart()).line + 1}`;
  const visit = (node: ts.Node): void => {
    if (ts.isRegularExpressionLiteral(node)) {
      const literal = node.text;
      const end = literal.lastIndexOf('/');
      found.push({ where: where(node), regex: new RegExp(literal.slice(1, end), literal.slice(end + 1)) });
    } else if (
      ts.isNewExpression(node) &&
      ts.isIdentifier(node.expression) &&
      node.expression.text === 'RegExp' &&
      node.arguments?.[0] &&
      ts.isStringLiteralLike(node.arguments[0])
    ) {
      const flags =
        node.arguments[1] && ts.isStringLiteralLike(node.arguments[1]) ? node.arguments[1].text : '';
      found.push({ where: where(node), regex: new RegExp(node.arguments[0].text, flags) });
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return found;
}

/** Every `pattern` in the JSON Schema of every zod schema a module exports. */
function zodPatterns(moduleName: string, exports: Record<string, unknown>): Found[] {
  const found: Found[] = [];
  const collect = (node: unknown, where: string): void => {
    if (Array.isArray(node)) node.forEach((n) => collect(n, where));
    else if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) {
        if (k === 'pattern' && typeof v === 'string') found.push({ where, regex: new RegExp(v, 'u') });
        else collect(v, where);
      }
    }
  };
  for (const [name, value] of Object.entries(exports)) {
    if (!(value instanceof z.ZodType)) continue;
    collect(z.toJSONSchema(value, { io: 'input', unrepresentable: 'any' }), `${moduleName}:${name}`);
  }
  return found;
}

/** The regexes recheck finds vulnerable (exponential or polynomial), or cannot decide. */
async function vulnerable(found: Found[]): Promise<string[]> {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const f of found) {
    const key = `${f.regex.source}/${f.regex.flags}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const result = await check(f.regex.source, f.regex.flags.replace(/[gy]/g, ''), { timeout: 10_000 });
    if (result.status !== 'safe') {
      const how = result.status === 'vulnerable' ? result.complexity.summary : result.status;
      out.push(`${f.where} ${String(f.regex)} (${how})`);
    }
  }
  return out;
}

describe('regular expressions', () => {
  const literals = sourceFiles(SRC).flatMap(regexesIn);

  it('finds the regular expressions of src (the scan itself works)', () => {
    expect(literals.length).toBeGreaterThan(40);
    expect(literals.some((f) => f.where.startsWith('common/validation.ts'))).toBe(true);
  });

  it('none in src can backtrack badly', async () => {
    expect(await vulnerable(literals)).toEqual([]);
  });

  it('none that the schemas carry (zod formats included) can backtrack badly', async () => {
    const modules: Record<string, Record<string, unknown>> = {
      'tenants.dto': await import('../../../src/tenants/tenants.dto.js'),
      'connectors.dto': await import('../../../src/identity/connectors.dto.js'),
      'connections.dto': await import('../../../src/connections/connections.dto.js'),
      'connect-sessions.dto': await import('../../../src/connect/connect-sessions.dto.js'),
      'provider-apps.dto': await import('../../../src/providers/provider-apps.dto.js'),
      'key-backend.dto': await import('../../../src/crypto/key-backend.dto.js'),
      'provider-definition': await import('../../../src/providers/provider-definition.js'),
      validation: await import('../../../src/common/validation.js'),
      jwk: await import('../../../src/identity/jwk.js'),
    };
    const patterns = Object.entries(modules).flatMap(([m, e]) => zodPatterns(m, e));
    expect(patterns.length).toBeGreaterThan(10);
    expect(await vulnerable(patterns)).toEqual([]);
  });
});

describe('a tenant’s connection-config pattern (checked at save time)', () => {
  const withPattern = (pattern: string) => ({
    key: 'corp',
    name: 'Corp',
    authMode: 'api_key',
    connectionConfig: [{ key: 'tenant', label: 'Tenant', pattern }],
    apiKey: { verify: { url: 'https://{tenant}.corp.example/me' } },
  });

  it.each(['^a*a*a*a*a*a*$', '^(?:[a-z]+.)*x$', '^\\d+\\d+$', '^(a|a)*$', '^([a-z]+)+$'])(
    'refuses %s, which can backtrack badly',
    async (pattern) => {
      const { customProviderDefinitionSchema } =
        await import('../../../src/providers/provider-definition.js');
      const result = customProviderDefinitionSchema.safeParse(withPattern(pattern));
      expect(result.success).toBe(false);
    },
  );

  it.each(['^[a-z][a-z0-9-]{0,62}$', '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$', '^(eu|us)-[0-9]{1,3}$'])(
    'accepts %s',
    async (pattern) => {
      const { customProviderDefinitionSchema } =
        await import('../../../src/providers/provider-definition.js');
      const result = customProviderDefinitionSchema.safeParse(withPattern(pattern));
      expect(result.error?.issues ?? []).toEqual([]);
    },
  );
});
