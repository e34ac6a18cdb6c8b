/**
 * A HashiCorp Vault emulator for tests and local runs: a node:http server that speaks enough of the Vault HTTP API
 * v1 (token auth, AppRole login, the transit secrets engine, sys/health) that the real `node-vault` client talks
 * to it unchanged.
 *
 * Transit follows Vault's own behaviour, including where it surprises:
 *   - ciphertexts are `vault:v<N>:<base64(nonce ‖ ciphertext ‖ tag)>` under real AES-GCM (aes256-gcm96 or
 *     aes128-gcm96), with `associated_data` bound as AAD on encrypt and decrypt;
 *   - `datakey` and `rewrap` do NOT take `associated_data` (Vault's handlers ignore it and answer with an
 *     "Endpoint ignored these unrecognized parameters" warning), so a rewrap of a ciphertext bound to associated
 *     data fails with "cipher: message authentication failed", exactly as in Vault;
 *   - encrypting to a key that does not exist creates it (Vault's upsert), unless `upsertOnEncrypt: false`;
 *   - the error strings are Vault's ("encryption key not found", "ciphertext or signature version is disallowed
 *     by policy (too old)", "invalid ciphertext: …", "permission denied", "invalid role ID", …).
 *
 * Keys live per namespace (`X-Vault-Namespace`; any namespace is accepted) and per mount (`mounts`, default
 * ['transit']). Tokens are global; a token may carry a policy, here a list of allowed path prefixes relative to
 * /v1/ (a trailing `*` is allowed and ignored), so a test can simulate a token that lacks a permission. Tokens
 * from AppRole logins expire after `tokenTtlSeconds`.
 *
 * Fault knobs (`faults`): latency, a random error rate (500 "internal error", or 503 "Vault is sealed" with
 * errorKind 'sealed'), `hang`, which holds every request unanswered until it is cleared or the emulator closes, and
 * `redirectTo`, which answers every request with a 307 to another address (as a standby node or a hostile server).
 */
import crypto from 'node:crypto';
import http from 'node:http';
import { EmulatorFaults, decodeStrictBase64, listen, readBody, shutDown } from './kms-emulator.js';

export type VaultFaultKind = 'internal' | 'sealed';
export type TransitKeyType = 'aes256-gcm96' | 'aes128-gcm96';

export interface VaultEmulatorOptions {
  port?: number;
  host?: string;
  /** Mount paths of transit engines. Default ['transit']. */
  mounts?: string[];
  /** Vault creates a missing key on encrypt (upsert); false answers "encryption key not found". Default true. */
  upsertOnEncrypt?: boolean;
  /** Lifetime of tokens issued by AppRole login. Default 3600. */
  tokenTtlSeconds?: number;
}

export interface VaultEmulator {
  readonly url: string;
  readonly port: number;
  /** Generated at start; allowed everywhere. */
  readonly rootToken: string;
  readonly faults: EmulatorFaults<VaultFaultKind>;
  /** Every HTTP request received, faulted or not. */
  readonly requests: number;
  /** Requests per operation (e.g. "transit.encrypt", "approle.login"), faulted or not. */
  readonly callsByOp: Record<string, number>;
  /** A new token; with `policyPaths`, only paths starting with one of them (relative to /v1/) are allowed. */
  createToken(policyPaths?: string[], options?: { ttlSeconds?: number }): string;
  revokeToken(token: string): void;
  /** Registers an AppRole; its logins get tokens restricted to `policyPaths` when given. */
  addAppRole(roleId: string, secretId: string, policyPaths?: string[]): void;
  removeAppRole(roleId: string): void;
  /** Revokes every token issued by logins to the role; returns how many. */
  revokeAppRoleTokens(roleId: string): number;
  /** Creates a transit key directly (no HTTP). */
  createTransitKey(
    name: string,
    options?: { mount?: string; namespace?: string; type?: TransitKeyType },
  ): void;
  close(): Promise<void>;
}

interface TokenRecord {
  token: string;
  accessor: string;
  policyPaths?: string[];
  createdAt: number;
  ttlSeconds: number;
  revoked: boolean;
  roleId?: string;
}

interface AppRole {
  secretId: string;
  policyPaths?: string[];
}

interface TransitKey {
  name: string;
  type: TransitKeyType;
  /** Version → key bytes and creation time (unix seconds). */
  versions: Map<number, { key: Buffer; createdAt: number }>;
  latestVersion: number;
  minDecryptionVersion: number;
  minEncryptionVersion: number;
  deletionAllowed: boolean;
}

type Json = Record<string, unknown>;

class VaultError extends Error {
  constructor(
    readonly status: number,
    message?: string,
  ) {
    super(message ?? '');
  }
}

interface Route {
  op: string;
  authenticated: boolean;
  run(ctx: CallContext): Reply;
}

interface CallContext {
  method: string;
  body: Json;
  namespace: string;
  token?: TokenRecord;
}

type Reply = { status: number; body?: Json };

const KEY_NAME = /^\w(?:[\w\-.@]*\w)?$/;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const ALWAYS_ALLOWED = ['auth/token/lookup-self', 'auth/token/revoke-self', 'auth/token/renew-self'];

class VaultEmulatorServer implements VaultEmulator {
  readonly faults = new EmulatorFaults<VaultFaultKind>('internal');
  readonly callsByOp: Record<string, number> = {};
  readonly rootToken = newToken();
  url = '';
  port = 0;
  #requests = 0;
  #closed = false;
  readonly #mounts: string[];
  readonly #upsert: boolean;
  readonly #tokenTtlSeconds: number;
  readonly #tokens = new Map<string, TokenRecord>();
  readonly #appRoles = new Map<string, AppRole>();
  readonly #keys = new Map<string, TransitKey>();
  readonly #server: http.Server;

  constructor(options: VaultEmulatorOptions) {
    this.#mounts = (options.mounts ?? ['transit']).map((m) => m.replace(/^\/+|\/+$/g, ''));
    this.#upsert = options.upsertOnEncrypt ?? true;
    this.#tokenTtlSeconds = options.tokenTtlSeconds ?? 3600;
    this.addToken(this.rootToken, undefined, 0);
    this.#server = http.createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) send(res, 500, { errors: [String(error)] });
      });
    });
  }

  get requests(): number {
    return this.#requests;
  }

  async start(port: number, host: string): Promise<void> {
    this.port = await listen(this.#server, port, host);
    this.url = `http://${host.includes(':') ? `[${host}]` : host}:${this.port}`;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.faults.releaseAll();
    await shutDown(this.#server);
  }

  createToken(policyPaths?: string[], options: { ttlSeconds?: number } = {}): string {
    return this.addToken(newToken(), policyPaths, options.ttlSeconds ?? 0).token;
  }

  revokeToken(token: string): void {
    const record = this.#tokens.get(token);
    if (record) record.revoked = true;
  }

  addAppRole(roleId: string, secretId: string, policyPaths?: string[]): void {
    this.#appRoles.set(roleId, { secretId, policyPaths: policyPaths ? [...policyPaths] : undefined });
  }

  removeAppRole(roleId: string): void {
    this.#appRoles.delete(roleId);
  }

  revokeAppRoleTokens(roleId: string): number {
    let count = 0;
    for (const record of this.#tokens.values()) {
      if (record.roleId === roleId && !record.revoked) {
        record.revoked = true;
        count += 1;
      }
    }
    return count;
  }

  createTransitKey(
    name: string,
    options: { mount?: string; namespace?: string; type?: TransitKeyType } = {},
  ): void {
    const mount = options.mount ?? this.#mounts[0];
    const id = keyId(normaliseNamespace(options.namespace), mount, name);
    if (!this.#keys.has(id)) this.#keys.set(id, newTransitKey(name, options.type ?? 'aes256-gcm96'));
  }

  private addToken(token: string, policyPaths: string[] | undefined, ttlSeconds: number, roleId?: string) {
    const record: TokenRecord = {
      token,
      accessor: crypto.randomBytes(12).toString('base64url'),
      policyPaths: policyPaths?.map((p) => p.replace(/\*$/, '')),
      createdAt: Date.now(),
      ttlSeconds,
      revoked: false,
      roleId,
    };
    this.#tokens.set(token, record);
    return record;
  }

  // -------------------------------------------------------------------------------------------------------
  // HTTP
  // -------------------------------------------------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const raw = await readBody(req);
    this.#requests += 1;
    const url = new URL(req.url ?? '/', 'http://vault.invalid');
    let method = (req.method ?? 'GET').toUpperCase();
    if (method === 'PUT') method = 'POST';
    const list = url.searchParams.get('list');
    if (method === 'GET' && (list === 'true' || list === '1')) method = 'LIST';
    const path = url.pathname.startsWith('/v1/') ? url.pathname.slice('/v1/'.length).replace(/\/+$/, '') : '';
    const route = this.route(path, method);
    this.callsByOp[route.op] = (this.callsByOp[route.op] ?? 0) + 1;

    await this.faults.apply();
    if (this.#closed || this.faults.redirected(req, res)) return;
    try {
      if (this.faults.shouldFail()) {
        throw this.faults.errorKind === 'sealed'
          ? new VaultError(503, 'Vault is sealed')
          : new VaultError(500, 'internal error');
      }
      if (raw === undefined) throw new VaultError(413, 'request body too large');
      const ctx: CallContext = {
        method,
        body: parseBody(raw, method),
        namespace: normaliseNamespace(header(req, 'x-vault-namespace')),
      };
      if (route.authenticated) {
        ctx.token = this.authenticate(req, path);
      }
      const reply = route.run(ctx);
      send(res, reply.status, reply.body);
    } catch (error) {
      if (!(error instanceof VaultError)) throw error;
      send(res, error.status, { errors: error.message === '' ? [] : [error.message] });
    }
  }

  private authenticate(req: http.IncomingMessage, path: string): TokenRecord {
    const bearer = /^Bearer\s+(\S+)$/i.exec(header(req, 'authorization') ?? '')?.[1];
    const token = header(req, 'x-vault-token') ?? bearer;
    const record = token === undefined ? undefined : this.#tokens.get(token);
    if (
      !record ||
      record.revoked ||
      (record.ttlSeconds > 0 && Date.now() > record.createdAt + record.ttlSeconds * 1000)
    ) {
      throw new VaultError(403, 'permission denied');
    }
    if (
      record.policyPaths !== undefined &&
      !ALWAYS_ALLOWED.includes(path) &&
      !record.policyPaths.some((prefix) => path.startsWith(prefix))
    ) {
      throw new VaultError(403, 'permission denied');
    }
    return record;
  }

  private route(path: string, method: string): Route {
    if (path === 'sys/health') {
      return { op: 'sys.health', authenticated: false, run: (c) => this.health(c) };
    }
    const login = /^auth\/([^/]+)\/login$/.exec(path);
    if (login && login[1] === 'approle') {
      return { op: 'approle.login', authenticated: false, run: (c) => this.appRoleLogin(c) };
    }
    if (path === 'auth/token/lookup-self') {
      return { op: 'token.lookup-self', authenticated: true, run: (c) => this.lookupSelf(c) };
    }
    if (path === 'auth/token/create') {
      return { op: 'token.create', authenticated: true, run: (c) => this.createChildToken(c) };
    }
    if (path === 'auth/token/revoke-self') {
      return { op: 'token.revoke-self', authenticated: true, run: (c) => this.revokeSelf(c) };
    }
    const mount = this.#mounts
      .filter((m) => path === m || path.startsWith(`${m}/`))
      .sort((a, b) => b.length - a.length)[0];
    if (mount !== undefined) {
      const transit = this.transitRoute(mount, path.slice(mount.length + 1), method);
      if (transit) return transit;
    }
    return {
      op: '(unknown)',
      authenticated: true,
      run: () => {
        throw new VaultError(404, `no handler for route "${path}". route entry not found.`);
      },
    };
  }

  private transitRoute(mount: string, rest: string, method: string): Route | undefined {
    const parts = rest.split('/');
    const route = (op: string, allowed: string[], name: string, run: (c: CallContext) => Reply): Route => ({
      op: `transit.${op}`,
      authenticated: true,
      run: (c) => {
        if (!allowed.includes(c.method)) throw new VaultError(405, 'unsupported operation');
        if (!KEY_NAME.test(name)) {
          throw new VaultError(404, `no handler for route "${mount}/${rest}". route entry not found.`);
        }
        return run(c);
      },
    });
    if (rest === 'keys') {
      return route('keys.list', ['LIST'], 'keys', (c) => this.listKeys(c, mount));
    }
    const [section, name = '', action] = parts;
    if (section === 'keys' && parts.length === 2) {
      if (method === 'GET') return route('keys.read', ['GET'], name, (c) => this.readKey(c, mount, name));
      if (method === 'DELETE') {
        return route('keys.delete', ['DELETE'], name, (c) => this.deleteKey(c, mount, name));
      }
      return route('keys.create', ['POST'], name, (c) => this.createKey(c, mount, name));
    }
    if (section === 'keys' && parts.length === 3 && action === 'rotate') {
      return route('keys.rotate', ['POST'], name, (c) => this.rotateKey(c, mount, name));
    }
    if (section === 'keys' && parts.length === 3 && action === 'config') {
      return route('keys.config', ['POST'], name, (c) => this.configureKey(c, mount, name));
    }
    if (parts.length === 2 && section === 'encrypt') {
      return route('encrypt', ['POST'], name, (c) => this.encrypt(c, mount, name));
    }
    if (parts.length === 2 && section === 'decrypt') {
      return route('decrypt', ['POST'], name, (c) => this.decrypt(c, mount, name));
    }
    if (parts.length === 2 && section === 'rewrap') {
      return route('rewrap', ['POST'], name, (c) => this.rewrap(c, mount, name));
    }
    if (parts.length === 3 && section === 'datakey') {
      const keyName = action ?? '';
      return route('datakey', ['POST'], keyName, (c) => this.dataKey(c, mount, name, keyName));
    }
    return undefined;
  }

  // -------------------------------------------------------------------------------------------------------
  // sys, auth
  // -------------------------------------------------------------------------------------------------------

  private health(_ctx: CallContext): Reply {
    return {
      status: 200,
      body: {
        initialized: true,
        sealed: false,
        standby: false,
        performance_standby: false,
        replication_performance_mode: 'disabled',
        replication_dr_mode: 'disabled',
        server_time_utc: Math.floor(Date.now() / 1000),
        version: '1.18.0+emulator',
        cluster_name: 'vault-emulator',
        cluster_id: 'emulator',
      },
    };
  }

  private appRoleLogin(ctx: CallContext): Reply {
    if (ctx.method !== 'POST') throw new VaultError(405, 'unsupported operation');
    const roleId = ctx.body.role_id;
    if (typeof roleId !== 'string' || roleId === '') throw new VaultError(400, 'missing role_id');
    const role = this.#appRoles.get(roleId);
    if (!role) throw new VaultError(400, 'invalid role ID');
    const secretId = ctx.body.secret_id;
    if (typeof secretId !== 'string' || !constantTimeEqual(secretId, role.secretId)) {
      throw new VaultError(400, 'invalid secret id');
    }
    const record = this.addToken(newToken(), role.policyPaths, this.#tokenTtlSeconds, roleId);
    return { status: 200, body: envelope(null, [], this.auth(record, { role_name: roleId })) };
  }

  private lookupSelf(ctx: CallContext): Reply {
    if (ctx.method !== 'GET') throw new VaultError(405, 'unsupported operation');
    const record = ctx.token!;
    return {
      status: 200,
      body: envelope({
        accessor: record.accessor,
        creation_time: Math.floor(record.createdAt / 1000),
        creation_ttl: record.ttlSeconds,
        display_name: record.roleId ? 'approle' : 'token',
        entity_id: '',
        expire_time: record.ttlSeconds > 0 ? new Date(record.createdAt + record.ttlSeconds * 1000) : null,
        explicit_max_ttl: 0,
        id: record.token,
        issue_time: new Date(record.createdAt).toISOString(),
        meta: record.roleId ? { role_name: record.roleId } : null,
        num_uses: 0,
        orphan: true,
        path: record.roleId ? 'auth/approle/login' : 'auth/token/create',
        policies: policiesOf(record),
        renewable: record.ttlSeconds > 0,
        ttl: remainingTtl(record),
        type: 'service',
      }),
    };
  }

  private createChildToken(ctx: CallContext): Reply {
    if (ctx.method !== 'POST') throw new VaultError(405, 'unsupported operation');
    const ttl = ctx.body.ttl === undefined ? 0 : parseDuration(ctx.body.ttl);
    if (ttl === undefined) throw new VaultError(400, 'error parsing ttl');
    const record = this.addToken(newToken(), ctx.token!.policyPaths, ttl);
    return { status: 200, body: envelope(null, [], this.auth(record, null)) };
  }

  private revokeSelf(ctx: CallContext): Reply {
    if (ctx.method !== 'POST') throw new VaultError(405, 'unsupported operation');
    ctx.token!.revoked = true;
    return { status: 204 };
  }

  private auth(record: TokenRecord, metadata: Json | null): Json {
    const policies = policiesOf(record);
    return {
      client_token: record.token,
      accessor: record.accessor,
      policies,
      token_policies: policies,
      metadata,
      lease_duration: record.ttlSeconds,
      renewable: record.ttlSeconds > 0,
      entity_id: '',
      token_type: 'service',
      orphan: true,
      mfa_requirement: null,
      num_uses: 0,
    };
  }

  // -------------------------------------------------------------------------------------------------------
  // transit
  // -------------------------------------------------------------------------------------------------------

  private findKey(ctx: CallContext, mount: string, name: string): TransitKey | undefined {
    return this.#keys.get(keyId(ctx.namespace, mount, name));
  }

  private listKeys(ctx: CallContext, mount: string): Reply {
    const prefix = keyId(ctx.namespace, mount, '');
    const names = [...this.#keys.keys()]
      .filter((k) => k.startsWith(prefix))
      .map((k) => k.slice(prefix.length));
    if (names.length === 0) throw new VaultError(404);
    return { status: 200, body: envelope({ keys: names.sort() }) };
  }

  private createKey(ctx: CallContext, mount: string, name: string): Reply {
    const warnings = unknownParameters(ctx.body, [
      'type',
      'derived',
      'convergent_encryption',
      'exportable',
      'allow_plaintext_backup',
      'auto_rotate_period',
      'key_size',
      'managed_key_name',
      'managed_key_id',
      'context',
    ]);
    const type = ctx.body.type ?? 'aes256-gcm96';
    if (type !== 'aes256-gcm96' && type !== 'aes128-gcm96') {
      throw new VaultError(400, `unknown key type ${typeof type === 'string' ? type : JSON.stringify(type)}`);
    }
    if (ctx.body.derived === true || ctx.body.convergent_encryption === true) {
      throw new VaultError(400, 'this emulator does not support derived or convergent keys');
    }
    const id = keyId(ctx.namespace, mount, name);
    let key = this.#keys.get(id);
    if (!key) {
      key = newTransitKey(name, type);
      this.#keys.set(id, key);
    }
    return { status: 200, body: envelope(keyData(key), warnings) };
  }

  private readKey(ctx: CallContext, mount: string, name: string): Reply {
    const key = this.findKey(ctx, mount, name);
    if (!key) throw new VaultError(404);
    return { status: 200, body: envelope(keyData(key)) };
  }

  private deleteKey(ctx: CallContext, mount: string, name: string): Reply {
    const key = this.findKey(ctx, mount, name);
    if (!key) throw new VaultError(400, 'could not delete key; not found');
    if (!key.deletionAllowed) throw new VaultError(400, 'deletion is not allowed for this key');
    this.#keys.delete(keyId(ctx.namespace, mount, name));
    return { status: 204 };
  }

  private rotateKey(ctx: CallContext, mount: string, name: string): Reply {
    const key = this.findKey(ctx, mount, name);
    if (!key) throw new VaultError(400, 'key not found');
    key.latestVersion += 1;
    key.versions.set(key.latestVersion, { key: newKeyBytes(key.type), createdAt: nowSeconds() });
    return { status: 200, body: envelope(keyData(key), unknownParameters(ctx.body, ['managed_key_name'])) };
  }

  private configureKey(ctx: CallContext, mount: string, name: string): Reply {
    const warnings = unknownParameters(ctx.body, [
      'min_decryption_version',
      'min_encryption_version',
      'deletion_allowed',
      'exportable',
      'allow_plaintext_backup',
      'auto_rotate_period',
    ]);
    const key = this.findKey(ctx, mount, name);
    if (!key) throw new VaultError(400, 'no existing key named ' + name + ' could be found');
    let minDecryption = key.minDecryptionVersion;
    let minEncryption = key.minEncryptionVersion;
    if (ctx.body.min_decryption_version !== undefined) {
      const value = integerField(ctx.body, 'min_decryption_version');
      if (value < 0) throw new VaultError(400, 'min decryption version cannot be negative');
      minDecryption = value === 0 ? 1 : value;
      if (minDecryption > key.latestVersion) {
        throw new VaultError(
          400,
          `cannot set min decryption version of ${minDecryption}, latest key version is ${key.latestVersion}`,
        );
      }
    }
    if (ctx.body.min_encryption_version !== undefined) {
      const value = integerField(ctx.body, 'min_encryption_version');
      if (value < 0) throw new VaultError(400, 'min encryption version cannot be negative');
      if (value > key.latestVersion) {
        throw new VaultError(
          400,
          `cannot set min encryption version of ${value}, latest key version is ${key.latestVersion}`,
        );
      }
      minEncryption = value;
    }
    if (minEncryption > 0 && minEncryption < minDecryption) {
      throw new VaultError(400, 'min decryption version should not be less then min available version');
    }
    if (ctx.body.deletion_allowed !== undefined)
      key.deletionAllowed = booleanField(ctx.body, 'deletion_allowed');
    key.minDecryptionVersion = minDecryption;
    key.minEncryptionVersion = minEncryption;
    return { status: 200, body: envelope(keyData(key), warnings) };
  }

  private encrypt(ctx: CallContext, mount: string, name: string): Reply {
    const warnings = unknownParameters(ctx.body, [
      'plaintext',
      'context',
      'nonce',
      'type',
      'convergent_encryption',
      'key_version',
      'associated_data',
      'batch_input',
      'padding_scheme',
      'partial_failure_response_code',
    ]);
    if (ctx.body.batch_input !== undefined)
      throw new VaultError(400, 'this emulator does not support batch_input');
    if (rejectDerivation(ctx.body))
      throw new VaultError(400, 'this emulator does not support key derivation');
    const plaintextField = ctx.body.plaintext;
    if (typeof plaintextField !== 'string') throw new VaultError(400, 'missing plaintext to encrypt');
    const plaintext = base64Field(plaintextField);
    const aad = associatedData(ctx.body);
    let key = this.findKey(ctx, mount, name);
    if (!key) {
      const type = ctx.body.type ?? 'aes256-gcm96';
      if (!this.#upsert) throw new VaultError(400, 'encryption key not found');
      if (type !== 'aes256-gcm96' && type !== 'aes128-gcm96') {
        throw new VaultError(
          400,
          `unknown key type ${typeof type === 'string' ? type : JSON.stringify(type)}`,
        );
      }
      key = newTransitKey(name, type);
      this.#keys.set(keyId(ctx.namespace, mount, name), key);
    }
    const version = encryptionVersion(key, ctx.body);
    return {
      status: 200,
      body: envelope({ ciphertext: seal(key, version, plaintext, aad), key_version: version }, warnings),
    };
  }

  private decrypt(ctx: CallContext, mount: string, name: string): Reply {
    const warnings = unknownParameters(ctx.body, [
      'ciphertext',
      'context',
      'nonce',
      'associated_data',
      'batch_input',
      'padding_scheme',
      'partial_failure_response_code',
    ]);
    if (ctx.body.batch_input !== undefined)
      throw new VaultError(400, 'this emulator does not support batch_input');
    if (rejectDerivation(ctx.body))
      throw new VaultError(400, 'this emulator does not support key derivation');
    const ciphertext = ctx.body.ciphertext;
    if (typeof ciphertext !== 'string' || ciphertext === '') {
      throw new VaultError(400, 'missing ciphertext to decrypt');
    }
    const aad = associatedData(ctx.body);
    const key = this.findKey(ctx, mount, name);
    if (!key) throw new VaultError(400, 'encryption key not found');
    const plaintext = open(key, ciphertext, aad);
    return { status: 200, body: envelope({ plaintext: plaintext.toString('base64') }, warnings) };
  }

  /** Vault's rewrap takes no associated_data: it decrypts and re-encrypts without any. */
  private rewrap(ctx: CallContext, mount: string, name: string): Reply {
    const warnings = unknownParameters(ctx.body, [
      'ciphertext',
      'context',
      'nonce',
      'key_version',
      'batch_input',
      'encrypt_padding_scheme',
      'decrypt_padding_scheme',
    ]);
    if (ctx.body.batch_input !== undefined)
      throw new VaultError(400, 'this emulator does not support batch_input');
    if (rejectDerivation(ctx.body))
      throw new VaultError(400, 'this emulator does not support key derivation');
    const ciphertext = ctx.body.ciphertext;
    if (typeof ciphertext !== 'string' || ciphertext === '') {
      throw new VaultError(400, 'missing ciphertext to decrypt');
    }
    const key = this.findKey(ctx, mount, name);
    if (!key) throw new VaultError(400, 'encryption key not found');
    const plaintext = open(key, ciphertext, undefined);
    try {
      const version = encryptionVersion(key, ctx.body);
      return {
        status: 200,
        body: envelope(
          { ciphertext: seal(key, version, plaintext, undefined), key_version: version },
          warnings,
        ),
      };
    } finally {
      plaintext.fill(0);
    }
  }

  /** Vault's datakey takes no associated_data either. */
  private dataKey(ctx: CallContext, mount: string, kind: string, name: string): Reply {
    const warnings = unknownParameters(ctx.body, [
      'context',
      'nonce',
      'bits',
      'key_version',
      'padding_scheme',
    ]);
    if (kind !== 'plaintext' && kind !== 'wrapped') {
      throw new VaultError(400, "Invalid path, must be 'plaintext' or 'wrapped'");
    }
    if (rejectDerivation(ctx.body))
      throw new VaultError(400, 'this emulator does not support key derivation');
    const bits = ctx.body.bits === undefined ? 256 : integerField(ctx.body, 'bits');
    if (bits !== 128 && bits !== 256 && bits !== 512) throw new VaultError(400, 'invalid bit length');
    const key = this.findKey(ctx, mount, name);
    if (!key) throw new VaultError(400, 'encryption key not found');
    const version = encryptionVersion(key, ctx.body);
    const plaintext = crypto.randomBytes(bits / 8);
    try {
      const data: Json = { key_version: version, ciphertext: seal(key, version, plaintext, undefined) };
      if (kind === 'plaintext') data.plaintext = plaintext.toString('base64');
      return { status: 200, body: envelope(data, warnings) };
    } finally {
      plaintext.fill(0);
    }
  }
}

export async function startVaultEmulator(options: VaultEmulatorOptions = {}): Promise<VaultEmulator> {
  const emulator = new VaultEmulatorServer(options);
  await emulator.start(options.port ?? 0, options.host ?? '127.0.0.1');
  return emulator;
}

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

function send(res: http.ServerResponse, status: number, payload?: Json): void {
  if (payload === undefined || status === 204) {
    res.writeHead(status, { 'cache-control': 'no-store' });
    res.end();
    return;
  }
  const body = JSON.stringify(payload);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

function envelope(data: Json | null, warnings: string[] = [], auth: Json | null = null): Json {
  return {
    request_id: crypto.randomUUID(),
    lease_id: '',
    renewable: false,
    lease_duration: 0,
    data,
    wrap_info: null,
    warnings: warnings.length > 0 ? warnings : null,
    auth,
    mount_type: auth ? 'approle' : 'transit',
  };
}

function header(req: http.IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function parseBody(raw: Buffer, method: string): Json {
  if (raw.length === 0 || method === 'GET' || method === 'LIST' || method === 'DELETE') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch (error) {
    throw new VaultError(400, `failed to parse JSON input: ${(error as Error).message}`);
  }
  if (parsed === null) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new VaultError(400, 'failed to parse JSON input: not an object');
  }
  return parsed as Json;
}

function normaliseNamespace(namespace: string | undefined): string {
  return (namespace ?? '').replace(/^\/+|\/+$/g, '');
}

function keyId(namespace: string, mount: string, name: string): string {
  return `${namespace}\u0000${mount}\u0000${name}`;
}

function newToken(): string {
  return `hvs.${crypto.randomBytes(18).toString('base64url')}`;
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** Vault policy names for display only; what a token may do is decided by its path prefixes. */
function policiesOf(record: TokenRecord): string[] {
  return record.policyPaths === undefined && record.roleId === undefined ? ['root'] : ['default'];
}

function remainingTtl(record: TokenRecord): number {
  if (record.ttlSeconds === 0) return 0;
  return Math.max(0, Math.floor((record.createdAt + record.ttlSeconds * 1000 - Date.now()) / 1000));
}

function constantTimeEqual(a: string, b: string): boolean {
  const x = crypto.createHash('sha256').update(a).digest();
  const y = crypto.createHash('sha256').update(b).digest();
  return crypto.timingSafeEqual(x, y);
}

function newKeyBytes(type: TransitKeyType): Buffer {
  return crypto.randomBytes(type === 'aes256-gcm96' ? 32 : 16);
}

function newTransitKey(name: string, type: TransitKeyType): TransitKey {
  return {
    name,
    type,
    versions: new Map([[1, { key: newKeyBytes(type), createdAt: nowSeconds() }]]),
    latestVersion: 1,
    minDecryptionVersion: 1,
    minEncryptionVersion: 0,
    deletionAllowed: false,
  };
}

function keyData(key: TransitKey): Json {
  const keys: Record<string, number> = {};
  for (const [version, entry] of key.versions) {
    if (version >= key.minDecryptionVersion) keys[String(version)] = entry.createdAt;
  }
  return {
    allow_plaintext_backup: false,
    auto_rotate_period: 0,
    deletion_allowed: key.deletionAllowed,
    derived: false,
    exportable: false,
    imported_key: false,
    keys,
    latest_version: key.latestVersion,
    min_available_version: 0,
    min_decryption_version: key.minDecryptionVersion,
    min_encryption_version: key.minEncryptionVersion,
    name: key.name,
    supports_decryption: true,
    supports_derivation: true,
    supports_encryption: true,
    supports_signing: false,
    type: key.type,
  };
}

/** Vault answers unknown fields with a warning rather than an error. */
function unknownParameters(body: Json, known: string[]): string[] {
  const unknown = Object.keys(body).filter((name) => !known.includes(name));
  return unknown.length > 0 ? [`Endpoint ignored these unrecognized parameters: [${unknown.join(' ')}]`] : [];
}

function rejectDerivation(body: Json): boolean {
  return (
    (typeof body.context === 'string' && body.context !== '') ||
    (typeof body.nonce === 'string' && body.nonce !== '')
  );
}

/** Go's base64.StdEncoding error text, so messages look like Vault's. */
function base64Field(value: string): Buffer {
  const bytes = decodeStrictBase64(value);
  if (bytes === undefined) {
    const bad = value.search(/[^A-Za-z0-9+/=]/);
    throw new VaultError(400, `illegal base64 data at input byte ${bad === -1 ? value.length : bad}`);
  }
  return bytes;
}

function associatedData(body: Json): Buffer | undefined {
  const value = body.associated_data;
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') throw new VaultError(400, "'associated_data' expected type 'string'");
  return base64Field(value);
}

function integerField(body: Json, name: string): number {
  const value = body[name];
  const number = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value;
  if (typeof number !== 'number' || !Number.isInteger(number)) {
    throw new VaultError(400, `error converting input for field "${name}": expected an integer`);
  }
  return number;
}

function booleanField(body: Json, name: string): boolean {
  const value = body[name];
  if (typeof value === 'boolean') return value;
  if (value === 'true' || value === 'false') return value === 'true';
  throw new VaultError(400, `error converting input for field "${name}": expected a boolean`);
}

/** Seconds, or a Go-style duration string ("30s", "5m", "1h"). */
function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return value;
  if (typeof value !== 'string') return undefined;
  const match = /^(\d+)([smh]?)$/.exec(value);
  if (!match) return undefined;
  return Number(match[1]) * ({ '': 1, s: 1, m: 60, h: 3600 } as Record<string, number>)[match[2]];
}

function encryptionVersion(key: TransitKey, body: Json): number {
  const requested = body.key_version === undefined ? 0 : integerField(body, 'key_version');
  if (requested === 0) return key.latestVersion;
  if (requested > key.latestVersion) {
    throw new VaultError(400, 'requested version for encryption is higher than the latest key version');
  }
  if (requested < key.minEncryptionVersion) {
    throw new VaultError(
      400,
      'requested version for encryption is less than the minimum encryption key version',
    );
  }
  if (requested < 0) throw new VaultError(400, 'requested version for encryption must be positive');
  return requested;
}

function cipherName(type: TransitKeyType): 'aes-256-gcm' | 'aes-128-gcm' {
  return type === 'aes256-gcm96' ? 'aes-256-gcm' : 'aes-128-gcm';
}

function seal(key: TransitKey, version: number, plaintext: Buffer, aad: Buffer | undefined): string {
  const entry = key.versions.get(version)!;
  const nonce = crypto.randomBytes(NONCE_BYTES);
  const cipher = crypto.createCipheriv(cipherName(key.type), entry.key, nonce, { authTagLength: TAG_BYTES });
  if (aad) cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return `vault:v${version}:${Buffer.concat([nonce, ciphertext, cipher.getAuthTag()]).toString('base64')}`;
}

/** Vault's checks and messages, in Vault's order. */
function open(key: TransitKey, value: string, aad: Buffer | undefined): Buffer {
  if (!value.startsWith('vault:')) throw new VaultError(400, 'invalid ciphertext: no prefix');
  const fields = value.split(':');
  if (fields.length !== 3) throw new VaultError(400, 'invalid ciphertext: wrong number of fields');
  const versionMatch = /^v(\d+)$/.exec(fields[1]);
  if (!versionMatch) throw new VaultError(400, 'invalid ciphertext: version number could not be decoded');
  let version = Number(versionMatch[1]);
  if (version === 0) version = 1;
  if (version > key.latestVersion) throw new VaultError(400, 'invalid ciphertext: version is too new');
  if (version < key.minDecryptionVersion) {
    throw new VaultError(400, 'ciphertext or signature version is disallowed by policy (too old)');
  }
  const decoded = decodeStrictBase64(fields[2]);
  if (decoded === undefined) throw new VaultError(400, 'invalid ciphertext: could not decode base64');
  if (decoded.length < NONCE_BYTES + TAG_BYTES) throw new VaultError(400, 'invalid ciphertext length');
  const entry = key.versions.get(version)!;
  try {
    const decipher = crypto.createDecipheriv(
      cipherName(key.type),
      entry.key,
      decoded.subarray(0, NONCE_BYTES),
      {
        authTagLength: TAG_BYTES,
      },
    );
    if (aad) decipher.setAAD(aad);
    decipher.setAuthTag(decoded.subarray(decoded.length - TAG_BYTES));
    return Buffer.concat([
      decipher.update(decoded.subarray(NONCE_BYTES, decoded.length - TAG_BYTES)),
      decipher.final(),
    ]);
  } catch {
    throw new VaultError(400, 'cipher: message authentication failed');
  }
}
