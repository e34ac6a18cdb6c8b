/**
 * The example's whole configuration, read once from the environment and validated before anything starts:
 * a mistake is reported naming the variable, and secrets are never echoed back.
 */
import { randomBytes } from 'node:crypto';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`${variable} ${problem}`);
  }
}

export interface ExampleConfig {
  custosUrl: string;
  clientId: string;
  clientSecret: string;
  /** Address to listen on (MCP_HOST, default 127.0.0.1). */
  host: string;
  /** MCP_PORT; 0 picks a free port (tests). */
  port: number;
  /** MCP_PUBLIC_URL without a trailing slash: an origin such as https://mcp.example.com. */
  publicUrl: string;
  /** `${publicUrl}/mcp`: this server's resource identifier (RFC 8707), named in its metadata. */
  resource: string;
  authIssuer: string;
  authAudience: string;
  provider: string;
  /** How the provider is named to users in the connect prompt (MCP_PROVIDER_NAME, default the key). */
  providerName: string;
  userinfoUrl: string;
  /** Exactly the scopes whoami asks Custos for (MCP_WHOAMI_SCOPE, default `openid profile`). */
  whoamiScopes: string[];
  /** The requestState key for 2026-07-28 (MCP_STATE_KEY), or a random one made for this process. */
  stateKey: Uint8Array;
  /** Whether stateKey was generated here: then only this process can accept the states it minted. */
  stateKeyGenerated: boolean;
}

type Env = Record<string, string | undefined>;

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

export function isLoopbackHost(hostname: string): boolean {
  return LOOPBACK.has(hostname) || /^127(\.\d{1,3}){3}$/.test(hostname);
}

function required(env: Env, name: string): string {
  const value = env[name];
  if (value === undefined || value.trim() === '') throw new ConfigError(name, 'is required');
  return value.trim();
}

/**
 * An absolute http(s) URL without credentials or fragment. Plain http only to a loopback host: a client secret,
 * a user's token or a provider token must not cross a network in the clear.
 */
function url(env: Env, name: string, opts: { originOnly?: boolean } = {}): string {
  const raw = required(env, name);
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, 'must be an absolute URL');
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new ConfigError(name, 'must be an http(s) URL');
  }
  if (parsed.protocol === 'http:' && !isLoopbackHost(parsed.hostname)) {
    throw new ConfigError(name, 'must use https (plain http is accepted only for localhost)');
  }
  if (parsed.username || parsed.password) throw new ConfigError(name, 'must not carry credentials');
  if (parsed.hash) throw new ConfigError(name, 'must not have a fragment');
  if (opts.originOnly && (parsed.pathname !== '/' || parsed.search)) {
    throw new ConfigError(name, `must be an origin only, such as ${parsed.origin} (the server serves /mcp)`);
  }
  return opts.originOnly ? parsed.origin : raw.replace(/\/+$/, '');
}

function port(env: Env, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d{1,5}$/.test(raw) || Number(raw) > 65535) {
    throw new ConfigError(name, 'must be a port number (0-65535)');
  }
  return Number(raw);
}

/** RFC 6749 scope-token characters, space-separated. */
function scopes(env: Env, name: string, fallback: string): string[] {
  const raw = env[name] ?? fallback;
  const list = raw.split(' ').filter((s) => s !== '');
  if (list.some((s) => !/^[\x21\x23-\x5b\x5d-\x7e]+$/.test(s))) {
    throw new ConfigError(name, 'must be space-separated OAuth scope names');
  }
  return [...new Set(list)];
}

export function loadConfig(env: Env): ExampleConfig {
  const custosUrl = url(env, 'CUSTOS_URL');
  const clientId = required(env, 'CUSTOS_CLIENT_ID');
  const clientSecret = env.CUSTOS_CLIENT_SECRET ?? '';
  if (clientSecret === '') throw new ConfigError('CUSTOS_CLIENT_SECRET', 'is required');
  const listenPort = port(env, 'MCP_PORT', 3001);
  const host = env.MCP_HOST?.trim() || '127.0.0.1';
  const publicUrl = url(env, 'MCP_PUBLIC_URL', { originOnly: true });
  const authIssuer = required(env, 'MCP_AUTH_ISSUER');
  // Checked as a URL, but kept byte for byte: it is compared exactly with each token's `iss`.
  url(env, 'MCP_AUTH_ISSUER');
  const authAudience = required(env, 'MCP_AUTH_AUDIENCE');
  const provider = required(env, 'MCP_PROVIDER');
  if (!/^[a-z0-9][a-z0-9_-]{0,62}$/i.test(provider)) {
    throw new ConfigError('MCP_PROVIDER', 'must be a Custos provider key, such as github');
  }
  const providerName = env.MCP_PROVIDER_NAME?.trim() || provider;
  if (providerName.length > 100 || /\p{Cc}/u.test(providerName)) {
    throw new ConfigError('MCP_PROVIDER_NAME', 'must be a short name on one line');
  }
  const userinfoUrl = url(env, 'MCP_USERINFO_URL');
  const whoamiScopes = scopes(env, 'MCP_WHOAMI_SCOPE', 'openid profile');

  let stateKey: Uint8Array;
  let stateKeyGenerated = false;
  const rawKey = env.MCP_STATE_KEY;
  if (rawKey === undefined || rawKey === '') {
    stateKey = randomBytes(32);
    stateKeyGenerated = true;
  } else {
    stateKey = new TextEncoder().encode(rawKey);
    if (stateKey.byteLength < 32) {
      throw new ConfigError('MCP_STATE_KEY', 'must be at least 32 bytes (e.g. `openssl rand -base64 48`)');
    }
  }

  return {
    custosUrl,
    clientId,
    clientSecret,
    host,
    port: listenPort,
    publicUrl,
    resource: `${publicUrl}/mcp`,
    authIssuer,
    authAudience,
    provider,
    providerName,
    userinfoUrl,
    whoamiScopes,
    stateKey,
    stateKeyGenerated,
  };
}
