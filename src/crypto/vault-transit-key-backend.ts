/**
 * The HashiCorp Vault Transit key backend (BYOK): data keys are wrapped by a tenant's own transit key, so Custos
 * never holds the key that protects them. Only data keys pass through here, never credentials.
 *
 * Each data key is bound to where it belongs through AES-GCM associated data,
 *
 *   associated_data = base64( u16-length-prefixed("custos/data-key", tenantId, dataKeyId) )
 *
 * which Vault requires again on decrypt, so a wrapped key copied to another tenant or row does not unwrap
 * ("cipher: message authentication failed" → key_invalid). The wrapped form is Vault's ciphertext string
 * (`vault:v<N>:…`) as UTF-8 bytes; keyRef is its `vault:v<N>` prefix.
 *
 * Vault's `datakey` and `rewrap` endpoints ignore `associated_data` (they answer with an "ignored these
 * unrecognized parameters" warning), so they cannot be used with a binding: a data key from `datakey` would be
 * wrapped without it, and `rewrap` fails on a ciphertext that has it. Instead, data keys come from
 * crypto.randomBytes and are wrapped with `encrypt`, and a rewrap is `decrypt` + `encrypt` (the data key leaves
 * Vault for a moment, as on every unwrap).
 *
 * Authentication is a static token or AppRole (login on first use, again when the lease runs out, and once more
 * when Vault answers 403, for a token revoked early). Every request has a timeout (`timeoutMs`, default 5 s).
 * Vault errors are mapped to CustosException by classifyVaultError; messages never carry tokens or secret ids.
 *
 * node-vault is the client, but not its transport: its axios would follow a redirect and re-send X-Vault-Token to
 * the new host. Requests go through the guarded client instead (`request-promise` hook): checked addresses, no
 * redirect followed (a Vault standby that redirects is a misconfiguration: point Custos at the active node or the
 * load balancer).
 */
import crypto from 'node:crypto';
import NodeVault from 'node-vault';
import { CommonException, CustosException } from '../common/errors.js';
import { trimChar } from '../common/validation.js';
import type { OutboundHttpClient } from '../common/outbound-http.js';
import { bindingStringProblem, lengthPrefixed } from './envelope.js';
import { guardedRequestPromise, KeyBackendTransportError, originOf } from './guarded-http-handler.js';
import type {
  DataKeyContext,
  GeneratedDataKey,
  KeyBackend,
  KeyBackendType,
  WrappedDataKey,
} from './key-backend.js';
import { CryptoException } from './crypto.errors.js';

export interface VaultTransitKeyBackendOptions {
  /** e.g. https://vault.example.com:8200 */
  address: string;
  /** Mount path of the transit engine. Default 'transit'. */
  mount?: string;
  keyName: string;
  /** A static token; or appRole. */
  token?: string;
  appRole?: { roleId: string; secretId: string; /** Default 'approle'. */ mount?: string };
  /** Vault Enterprise / HCP namespace, sent as X-Vault-Namespace. */
  namespace?: string;
  /** Per request. Default 5000. */
  timeoutMs?: number;
  /** The guarded client every request goes through. */
  http: OutboundHttpClient;
}

export type VaultFailureReason =
  | 'denied'
  | 'unauthenticated'
  | 'not_found'
  | 'version_disallowed'
  | 'unreachable'
  | 'throttled'
  | 'misconfigured'
  | 'invalid_ciphertext';

export interface VaultFailure {
  code: 'key_unavailable' | 'key_invalid';
  reason: VaultFailureReason;
}

const DATA_KEY_BYTES = 32;
const DEFAULT_TIMEOUT_MS = 5000;
const AAD_PURPOSE = 'custos/data-key';
const CIPHERTEXT_PATTERN = /^vault:v([1-9][0-9]{0,9}):[A-Za-z0-9+/]+={0,2}$/;
const PATH_SEGMENT = /^[\w\-.@]+(?:\/[\w\-.@]+)*$/;
/** Renew the AppRole token a little before Vault expires it. */
const LEASE_SAFETY = 0.9;

const PROBE_CONTEXT: DataKeyContext = {
  tenantId: 'custos-readiness-probe',
  dataKeyId: '00000000-0000-0000-0000-000000000000',
};

const MESSAGES: Record<VaultFailureReason, string> = {
  denied: 'Vault denied access to the transit key',
  unauthenticated: 'Vault did not accept the configured credentials',
  not_found: 'the Vault transit key does not exist',
  version_disallowed: 'the Vault transit key version is below min_decryption_version',
  unreachable: 'Vault could not be reached',
  throttled: 'Vault rate-limited the request',
  misconfigured: 'Vault rejected the request',
  invalid_ciphertext: 'the data key could not be unwrapped',
};

/**
 * Maps an error from node-vault (an ApiResponseError with the HTTP status and Vault's `errors`, or an axios
 * network error) to a CustosException code and a reason that config verification can turn into a precise 400.
 */
export function classifyVaultError(error: unknown): VaultFailure {
  const unavailable = (reason: VaultFailureReason): VaultFailure => ({ code: 'key_unavailable', reason });
  if (error instanceof KeyBackendTransportError) {
    return unavailable(
      error.reason === 'timeout' || error.reason === 'unreachable' ? 'unreachable' : 'misconfigured',
    );
  }
  const status = vaultStatus(error);
  if (status === undefined) {
    // No answer from Vault: refused, reset, timed out (axios ECONNREFUSED, ECONNRESET, ECONNABORTED, …).
    return unavailable('unreachable');
  }
  const message = vaultMessage(error).toLowerCase();
  if (status === 403) return unavailable('denied');
  if (status === 401) return unavailable('unauthenticated');
  if (status === 404) return unavailable('not_found');
  if (status === 429) return unavailable('throttled');
  if (status >= 500) return unavailable('unreachable');
  if (status === 400) {
    if (/invalid role id|invalid secret id|missing role_id|missing secret_id/.test(message)) {
      return unavailable('unauthenticated');
    }
    if (/encryption key not found|key not found|no existing key/.test(message)) {
      return unavailable('not_found');
    }
    if (/too old|disallowed by policy/.test(message)) return unavailable('version_disallowed');
    if (/authentication failed|invalid ciphertext|decrypt|base64/.test(message)) {
      return { code: 'key_invalid', reason: 'invalid_ciphertext' };
    }
  }
  return unavailable('misconfigured');
}

interface VaultResponse {
  data?: Record<string, unknown> | null;
  auth?: { client_token?: unknown; lease_duration?: unknown } | null;
}

export class VaultTransitKeyBackend implements KeyBackend {
  readonly type: KeyBackendType = 'vault-transit';
  readonly keyName: string;
  readonly mount: string;
  /** scheme://host[:port] of Vault, for messages. */
  readonly endpoint: string;
  readonly #client: NodeVault.client;
  readonly #staticToken?: string;
  readonly #appRole?: { roleId: string; secretId: string; mount: string };
  #token?: string;
  #tokenRenewAt = 0;
  #login?: Promise<string>;
  #logins = 0;

  constructor(options: VaultTransitKeyBackendOptions) {
    this.mount = trimChar(options.mount ?? 'transit', '/');
    this.keyName = options.keyName;
    this.endpoint = originOf(options.address) ?? 'Vault';
    if (!PATH_SEGMENT.test(this.mount) || !/^[\w\-.@]+$/.test(this.keyName)) {
      throw new CommonException('internal_error', 'vault-transit key backend: invalid mount or key name');
    }
    if ((options.token === undefined) === (options.appRole === undefined)) {
      throw new CommonException(
        'internal_error',
        'vault-transit key backend: give exactly one of token and appRole',
      );
    }
    this.#staticToken = options.token;
    if (options.appRole) {
      const { roleId, secretId, mount = 'approle' } = options.appRole;
      this.#appRole = { roleId, secretId, mount };
    }
    const clientOptions: NodeVault.VaultOptions = {
      endpoint: options.address,
      // node-vault's LIST verb is rejected by Node's HTTP parser; never used here, but keep reads plain.
      noCustomHTTPVerbs: true,
      'request-promise': guardedRequestPromise(options.http, options.timeoutMs ?? DEFAULT_TIMEOUT_MS),
      // Its debug output (DEBUG=node-vault) prints request bodies: AppRole secret ids and data keys.
      debug: () => undefined,
    };
    this.#client = NodeVault(clientOptions);
    // node-vault also falls back to VAULT_TOKEN, VAULT_NAMESPACE and VAULT_PREFIX from the environment; the
    // configuration is the only source here (tokens go per request, so the client itself holds none).
    Object.assign(this.#client, { token: '', namespace: options.namespace ?? '', pathPrefix: '' });
  }

  async generateDataKey(ctx: DataKeyContext): Promise<GeneratedDataKey> {
    const associatedData = bindingData(ctx, 'internal_error');
    const plaintext = crypto.randomBytes(DATA_KEY_BYTES);
    try {
      return { plaintext, ...(await this.wrap(plaintext, associatedData)) };
    } catch (error) {
      plaintext.fill(0);
      throw error;
    }
  }

  async wrapDataKey(plaintext: Buffer, ctx: DataKeyContext): Promise<WrappedDataKey> {
    if (!Buffer.isBuffer(plaintext) || plaintext.length !== DATA_KEY_BYTES) {
      throw new CommonException('internal_error', 'vault-transit key backend: a data key is 32 bytes');
    }
    return this.wrap(plaintext, bindingData(ctx, 'internal_error'));
  }

  async unwrapDataKey(wrapped: Buffer, ctx: DataKeyContext): Promise<Buffer> {
    const associatedData = bindingData(ctx, 'key_invalid');
    const ciphertext = parseWrapped(wrapped);
    const response = await this.send(
      (headers) =>
        this.#client.write(
          this.path('decrypt'),
          { ciphertext, associated_data: associatedData },
          { headers },
        ) as Promise<VaultResponse>,
    );
    const encoded = response.data?.plaintext;
    const plaintext = typeof encoded === 'string' ? Buffer.from(encoded, 'base64') : undefined;
    if (plaintext?.length !== DATA_KEY_BYTES) {
      plaintext?.fill(0);
      throw keyInvalid();
    }
    return plaintext;
  }

  /**
   * Rewraps a data key under the transit key's latest version, for key rotation. Vault's own rewrap endpoint
   * ignores associated data, so this is decrypt + encrypt.
   */
  async rewrapDataKey(wrapped: Buffer, ctx: DataKeyContext): Promise<WrappedDataKey> {
    const associatedData = bindingData(ctx, 'key_invalid');
    const plaintext = await this.unwrapDataKey(wrapped, ctx);
    try {
      return await this.wrap(plaintext, associatedData);
    } finally {
      plaintext.fill(0);
    }
  }

  /**
   * Proves the key exists without creating it, then does a real encrypt + decrypt round trip. Vault's encrypt
   * creates a missing key (upsert), so a mistyped key name would otherwise pass; decrypt never creates one, and a
   * decrypt of a well-formed but bogus ciphertext fails with "authentication failed" only when the key exists.
   */
  async check(): Promise<void> {
    const bogus = `vault:v1:${crypto.randomBytes(44).toString('base64')}`;
    try {
      await this.unwrapDataKey(Buffer.from(bogus, 'utf8'), PROBE_CONTEXT);
    } catch (error) {
      const reason = error instanceof CustosException ? error.details?.reason : undefined;
      if (reason !== 'invalid_ciphertext' && reason !== 'version_disallowed') throw error;
    }
    const generated = await this.generateDataKey(PROBE_CONTEXT);
    const unwrapped = await this.unwrapDataKey(generated.wrapped, PROBE_CONTEXT);
    try {
      if (!crypto.timingSafeEqual(generated.plaintext, unwrapped)) {
        throw new CryptoException('key_unavailable', 'the Vault transit key failed its round trip check', {
          backend: this.type,
          reason: 'misconfigured',
        });
      }
    } finally {
      generated.plaintext.fill(0);
      unwrapped.fill(0);
    }
  }

  /** Adds a key version (POST keys/:name/rotate); returns the new latest version. */
  async rotateKey(): Promise<number> {
    const response = await this.send(
      (headers) => this.#client.write(this.path('keys', 'rotate'), {}, { headers }) as Promise<VaultResponse>,
    );
    const latest = response.data?.latest_version;
    return typeof latest === 'number' ? latest : this.latestVersion();
  }

  /** Refuses decryption of versions below `version` (POST keys/:name/config); for retiring old versions. */
  async setMinDecryptionVersion(version: number): Promise<void> {
    if (!Number.isInteger(version) || version < 1) {
      throw new CommonException(
        'internal_error',
        'vault-transit key backend: version must be a positive integer',
      );
    }
    await this.send(
      (headers) =>
        this.#client.write(
          this.path('keys', 'config'),
          { min_decryption_version: version },
          { headers },
        ) as Promise<VaultResponse>,
    );
  }

  /** The key's latest version (GET keys/:name; needs read on the key). */
  async latestVersion(): Promise<number> {
    const response = await this.send(
      (headers) => this.#client.read(this.path('keys'), { headers }) as Promise<VaultResponse>,
    );
    const latest = response.data?.latest_version;
    if (typeof latest !== 'number') {
      throw new CryptoException('key_unavailable', MESSAGES.misconfigured, {
        backend: this.type,
        reason: 'misconfigured',
      });
    }
    return latest;
  }

  toString(): string {
    return `[VaultTransitKeyBackend ${this.mount}/${this.keyName}]`;
  }

  private async wrap(plaintext: Buffer, associatedData: string): Promise<WrappedDataKey> {
    const response = await this.send(
      (headers) =>
        this.#client.write(
          this.path('encrypt'),
          { plaintext: plaintext.toString('base64'), associated_data: associatedData },
          { headers },
        ) as Promise<VaultResponse>,
    );
    const ciphertext = response.data?.ciphertext;
    const version = typeof ciphertext === 'string' ? CIPHERTEXT_PATTERN.exec(ciphertext)?.[1] : undefined;
    if (typeof ciphertext !== 'string' || version === undefined) {
      throw new CryptoException('key_unavailable', 'Vault returned an unexpected ciphertext', {
        backend: this.type,
        reason: 'misconfigured',
      });
    }
    return { wrapped: Buffer.from(ciphertext, 'utf8'), keyRef: `vault:v${version}` };
  }

  /** `<mount>/<op>/<key>` or, for key management, `<mount>/keys/<key>[/<action>]`. */
  private path(op: 'encrypt' | 'decrypt' | 'keys', action?: 'rotate' | 'config'): string {
    const base = `${this.mount}/${op}/${this.keyName}`;
    return action ? `${base}/${action}` : base;
  }

  /**
   * Sends with the current token. With AppRole: logs in when there is no live token, and once more after a 403
   * (the token may have been revoked before its lease ran out). Any failure becomes a CustosException.
   */
  private async send(
    request: (headers: Record<string, string>) => Promise<VaultResponse>,
  ): Promise<VaultResponse> {
    try {
      const loginsBefore = this.#logins;
      const token = await this.currentToken();
      try {
        return await request({ 'X-Vault-Token': token });
      } catch (error) {
        // A 403 on a token fresh from login is a real denial (policy), not a revoked token: no second login.
        if (!this.#appRole || vaultStatus(error) !== 403 || this.#logins !== loginsBefore) throw error;
        if (this.#token === token) this.#token = undefined;
        return await request({ 'X-Vault-Token': await this.currentToken() });
      }
    } catch (error) {
      if (error instanceof CustosException) throw error;
      const { code, reason } = classifyVaultError(error);
      // A transport failure says which (redirect, refused address, timeout) and names at most the origin.
      const message = error instanceof KeyBackendTransportError ? error.message : MESSAGES[reason];
      throw new CryptoException(code, message, {
        backend: this.type,
        reason,
        ...(vaultStatus(error) === undefined ? {} : { status: vaultStatus(error) }),
        // Where, and below the protocol how, for a message that says what to check (key-backend-failure.ts).
        endpoint: error instanceof KeyBackendTransportError ? (error.origin ?? this.endpoint) : this.endpoint,
        ...(error instanceof KeyBackendTransportError && error.connection
          ? { connection: error.connection }
          : {}),
      });
    }
  }

  private async currentToken(): Promise<string> {
    if (this.#staticToken !== undefined) return this.#staticToken;
    if (this.#token !== undefined && Date.now() < this.#tokenRenewAt) return this.#token;
    this.#login ??= this.logIn().finally(() => {
      this.#login = undefined;
    });
    return this.#login;
  }

  private async logIn(): Promise<string> {
    const appRole = this.#appRole!;
    const startedAt = Date.now();
    // The client carries no token, so the login request has no X-Vault-Token header.
    const response = (await this.#client.write(`auth/${appRole.mount}/login`, {
      role_id: appRole.roleId,
      secret_id: appRole.secretId,
    })) as VaultResponse;
    const token = response.auth?.client_token;
    const lease = response.auth?.lease_duration;
    if (typeof token !== 'string' || token === '') {
      throw new CryptoException('key_unavailable', MESSAGES.unauthenticated, {
        backend: this.type,
        reason: 'unauthenticated',
      });
    }
    this.#token = token;
    this.#logins += 1;
    this.#tokenRenewAt =
      typeof lease === 'number' && lease > 0
        ? startedAt + lease * 1000 * LEASE_SAFETY
        : Number.POSITIVE_INFINITY;
    return token;
  }
}

function bindingData(ctx: DataKeyContext, onInvalid: 'internal_error' | 'key_invalid'): string {
  if (typeof ctx !== 'object' || ctx === null) {
    throw onInvalid === 'key_invalid'
      ? keyInvalid()
      : new CommonException('internal_error', 'vault-transit key backend: context must be an object');
  }
  for (const name of ['tenantId', 'dataKeyId'] as const) {
    const problem = bindingStringProblem(ctx[name]);
    if (problem) {
      throw onInvalid === 'key_invalid'
        ? keyInvalid()
        : new CommonException('internal_error', `vault-transit key backend: context.${name} ${problem}`);
    }
  }
  return lengthPrefixed([AAD_PURPOSE, ctx.tenantId, ctx.dataKeyId]).toString('base64');
}

function parseWrapped(wrapped: Buffer): string {
  if (!Buffer.isBuffer(wrapped)) throw keyInvalid();
  const text = wrapped.toString('utf8');
  if (!CIPHERTEXT_PATTERN.test(text) || !Buffer.from(text, 'utf8').equals(wrapped)) throw keyInvalid();
  return text;
}

function keyInvalid(): CustosException {
  return new CryptoException('key_invalid', MESSAGES.invalid_ciphertext, {
    backend: 'vault-transit',
    reason: 'invalid_ciphertext',
  });
}

function vaultStatus(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const status = (error as { response?: { statusCode?: unknown } }).response?.statusCode;
  return typeof status === 'number' ? status : undefined;
}

function vaultMessage(error: unknown): string {
  if (typeof error !== 'object' || error === null) return '';
  const body = (error as { response?: { body?: { errors?: unknown } } }).response?.body;
  const errors = body?.errors;
  if (Array.isArray(errors)) return errors.filter((e): e is string => typeof e === 'string').join('; ');
  const message = (error as { message?: unknown }).message;
  return typeof message === 'string' ? message : '';
}
