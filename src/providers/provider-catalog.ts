/** The built-in provider catalog: providers/*.yaml, validated once at start-up and read-only afterwards. */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse } from 'yaml';
import { packageRoot } from '../common/paths.js';
import { CustosException } from '../common/errors.js';
import {
  parseProviderDefinition,
  type AuthMode,
  type ConnectionParam,
  type ProviderDefinition,
} from './provider-definition.js';

export class ProviderCatalog {
  private constructor(private readonly byKey: ReadonlyMap<string, ProviderDefinition>) {}

  /** Reads and validates every `*.yaml` in `dir`; throws an Error naming the first bad file. */
  static async load(dir = path.join(packageRoot, 'providers')): Promise<ProviderCatalog> {
    const files = (await readdir(dir)).filter((name) => name.endsWith('.yaml')).sort();
    const byKey = new Map<string, ProviderDefinition>();
    for (const file of files) {
      const def = await loadFile(path.join(dir, file));
      if (`${def.key}.yaml` !== file) {
        throw new Error(
          `Provider file ${file} defines key "${def.key}"; the file must be named ${def.key}.yaml`,
        );
      }
      if (byKey.has(def.key)) throw new Error(`Provider file ${file} duplicates key "${def.key}"`);
      byKey.set(def.key, deepFreeze(def));
    }
    return new ProviderCatalog(new Map([...byKey].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))));
  }

  /** Every provider, sorted by key. The definitions are frozen. */
  list(): ProviderDefinition[] {
    return [...this.byKey.values()];
  }

  get(key: string): ProviderDefinition | undefined {
    return this.byKey.get(key);
  }
}

async function loadFile(file: string): Promise<ProviderDefinition> {
  const name = path.basename(file);
  let document: unknown;
  try {
    document = parse(await readFile(file, 'utf8'), { uniqueKeys: true, maxAliasCount: 0 });
  } catch (cause) {
    throw new Error(`Provider file ${name} is not valid YAML: ${(cause as Error).message}`, { cause });
  }
  try {
    return parseProviderDefinition(document);
  } catch (cause) {
    if (cause instanceof CustosException)
      throw new Error(`Provider file ${name}: ${cause.message}`, { cause });
    throw cause;
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** A provider as listed by `GET /v1/providers`: what a client needs to connect, nothing about how Custos calls it. */
export interface PublicProviderView {
  key: string;
  name: string;
  authMode: AuthMode;
  docsUrl?: string;
  /** Default scopes (empty for non-OAuth providers). */
  scopes: string[];
  connectionConfig?: ConnectionParam[];
  oauth2?: {
    authorizationUrl: string;
    tokenUrl: string;
    revocationUrl?: string;
    issuer?: string;
    scopeSeparator: string;
    pkce: boolean;
    rotatesRefreshToken: boolean;
  };
}

export function publicProviderView(def: ProviderDefinition): PublicProviderView {
  const view: PublicProviderView = {
    key: def.key,
    name: def.name,
    authMode: def.authMode,
    scopes: [...(def.oauth2?.scopes ?? [])],
  };
  if (def.docsUrl !== undefined) view.docsUrl = def.docsUrl;
  if (def.connectionConfig !== undefined) {
    view.connectionConfig = def.connectionConfig.map((p) => ({
      key: p.key,
      label: p.label,
      ...(p.pattern !== undefined && { pattern: p.pattern }),
    }));
  }
  if (def.oauth2 !== undefined) {
    const o = def.oauth2;
    view.oauth2 = {
      authorizationUrl: o.authorizationUrl,
      tokenUrl: o.tokenUrl,
      ...(o.revocationUrl !== undefined && { revocationUrl: o.revocationUrl }),
      ...(o.issuer !== undefined && { issuer: o.issuer }),
      scopeSeparator: o.scopeSeparator,
      pkce: o.pkce,
      rotatesRefreshToken: o.rotatesRefreshToken,
    };
  }
  return view;
}
