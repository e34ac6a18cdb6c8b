/**
 * An AWS KMS emulator for tests and local runs: a node:http server that speaks the KMS wire protocol (AWS JSON 1.1:
 * `POST /`, `x-amz-target: TrentService.<Op>`, base64 binary fields, errors as HTTP 400
 * `{"__type": "...Exception", "message": "..."}`) closely enough that the real `@aws-sdk/client-kms` talks to it
 * unchanged. Only symmetric ENCRYPT_DECRYPT keys exist.
 *
 * Cryptography is real: AES-256-GCM under per-key material, with the encryption context (a string map, serialised
 * canonically with sorted keys) bound as associated data, so decrypting with any other context fails exactly as
 * KMS fails (InvalidCiphertextException). Rotation adds material and keeps the old, so old ciphertexts still
 * decrypt while new encryptions use the newest.
 *
 * Ciphertext blob layout (this emulator's own; real KMS blobs are opaque too):
 *
 *   offset  size  field
 *   0       4     magic, ASCII "KMSE"
 *   4       1     format version, 0x01
 *   5       1     L = byte length of the key id
 *   6       L     key id, ASCII
 *   6+L     4     material version, u32 big-endian (1 = original material)
 *   10+L    12    AES-GCM IV
 *   22+L    16    AES-GCM tag
 *   38+L    n     ciphertext
 *
 *   aad = bytes [0, 10+L) ‖ UTF-8 JSON of the context's [key, value] pairs sorted by key
 *
 * Requests must carry a SigV4 `Authorization` header. With `credentials` configured, the access key id must be one
 * of them (else UnrecognizedClientException) and the signature is verified with its secret key (else
 * InvalidSignatureException); without, any well-formed header is accepted.
 *
 * Fault knobs (`faults`): latency, a random error rate (ThrottlingException or a 500), `hang`, which holds
 * every request unanswered until it is cleared or the emulator closes, and `redirectTo`, which answers every request
 * with a 307 to another address. A key's `denyAll` switch answers AccessDeniedException for every operation on it.
 *
 * Restarts: `snapshot()` copies the keys and aliases; a new emulator started on the same port without `state` is a
 * KMS that lost its state, with `state` one restored from backup. `addCredentials` accepts temporary credentials
 * (from the STS emulator).
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

/** The account every emulated key belongs to (AWS's documentation account). */
export const KMS_EMULATOR_ACCOUNT_ID = '111122223333';

const MAX_BODY_BYTES = 1024 * 1024;
const MAGIC = Buffer.from('KMSE', 'ascii');
const FORMAT_VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const MAX_ON_DEMAND_ROTATIONS = 25;
const MAX_CLOCK_SKEW_MS = 5 * 60 * 1000;
const ALIAS_NAME_PATTERN = /^alias\/[a-zA-Z0-9/_-]{1,250}$/;
const SIGV4_AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/;

// ---------------------------------------------------------------------------------------------------------
// Fault knobs, shared with the Vault emulator.
// ---------------------------------------------------------------------------------------------------------

/**
 * Fault knobs common to the emulators. `hang` is an accessor: clearing it releases the requests it held.
 * `errorRate` is a probability per request (1 = every request fails).
 */
export class EmulatorFaults<K extends string> {
  latencyMs = 0;
  errorRate = 0;
  /**
   * When set, every request is answered `307 Temporary Redirect` to this base URL plus the request's path (what a
   * compromised or hostile endpoint, or a Vault standby, would do); the request is not served.
   */
  redirectTo: string | undefined = undefined;
  #hang = false;
  readonly #waiters = new Set<() => void>();

  constructor(public errorKind: K) {}

  get hang(): boolean {
    return this.#hang;
  }

  set hang(value: boolean) {
    this.#hang = value;
    if (!value) this.releaseAll();
  }

  /** Resets every knob. */
  clear(): void {
    this.latencyMs = 0;
    this.errorRate = 0;
    this.redirectTo = undefined;
    this.hang = false;
  }

  /** Answers the redirect when `redirectTo` is set; true when the request was answered so. */
  redirected(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    if (this.redirectTo === undefined) return false;
    const location = new URL(req.url ?? '/', this.redirectTo).href;
    res.writeHead(307, { location, 'content-length': 0 });
    res.end();
    return true;
  }

  /** Applies latency and hang; resolves when the request may proceed (or the emulator closed). */
  async apply(): Promise<void> {
    if (this.latencyMs > 0) await delay(this.latencyMs);
    if (this.#hang) await new Promise<void>((resolve) => this.#waiters.add(resolve));
  }

  shouldFail(): boolean {
    return this.errorRate > 0 && Math.random() < this.errorRate;
  }

  /** Lets every held request go; used when hang is cleared and on close. */
  releaseAll(): void {
    for (const resolve of this.#waiters) resolve();
    this.#waiters.clear();
  }
}

/** Reads a request body up to a limit; resolves undefined when the body is too large. */
export async function readBody(
  req: http.IncomingMessage,
  limit = MAX_BODY_BYTES,
): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Listens on an ephemeral (or given) port and returns the bound port. */
export async function listen(server: http.Server, port: number, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** Stops accepting, drops open (also held) connections, and waits for the server to close. */
export async function shutDown(server: http.Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await closed;
}

/** Strict RFC 4648 base64 (with padding), the way AWS and Go decode it; undefined when malformed. */
export function decodeStrictBase64(value: string): Buffer | undefined {
  if (value.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) return undefined;
  const bytes = Buffer.from(value, 'base64');
  return bytes.toString('base64') === value ? bytes : undefined;
}

// ---------------------------------------------------------------------------------------------------------
// The KMS emulator.
// ---------------------------------------------------------------------------------------------------------

export type KmsFaultKind = 'throttling' | 'internal';
export type KmsKeyState = 'Enabled' | 'Disabled' | 'PendingDeletion';

export interface KmsEmulatorCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** When set, requests with this access key id must carry it as x-amz-security-token. */
  sessionToken?: string;
}

export interface KmsEmulatorOptions {
  port?: number;
  host?: string;
  /** The region in ARNs and the SigV4 scope. Default us-east-1. */
  region?: string;
  /** Accepted credentials; signatures are verified. Default: any well-formed SigV4 header is accepted. */
  credentials?: KmsEmulatorCredentials[];
  /**
   * Keys and aliases to start with, from `snapshot()` of an earlier emulator (a KMS restored from backup).
   * Default: none (a KMS that lost its state).
   */
  state?: KmsEmulatorState;
}

/** An opaque copy of an emulator's keys and aliases. */
export interface KmsEmulatorState {
  readonly keys: ReadonlyMap<string, unknown>;
  readonly aliases: ReadonlyMap<string, string>;
}

export interface KmsKeyHandle {
  keyId: string;
  arn: string;
}

export interface KmsEmulator {
  readonly url: string;
  readonly port: number;
  readonly region: string;
  readonly accountId: string;
  readonly faults: EmulatorFaults<KmsFaultKind>;
  /** Every HTTP request received, faulted or not. */
  readonly requests: number;
  /** Requests per operation name (e.g. "Decrypt"), faulted or not. */
  readonly callsByOp: Record<string, number>;
  /** Requests per access key id named in their SigV4 Authorization header (whether accepted or not). */
  readonly callsByAccessKeyId: Record<string, number>;
  /** Creates a key directly (no HTTP); optionally with an alias such as "alias/custos". */
  createKey(options?: { description?: string; alias?: string }): KmsKeyHandle;
  /** The per-key deny switch: every operation on the key answers AccessDeniedException while on. */
  setDenyAll(keyRef: string, deny: boolean): void;
  keyState(keyRef: string): KmsKeyState;
  /** How many material versions the key has (1 + rotations). */
  materialVersions(keyRef: string): number;
  /** Reads the key id and material version from a ciphertext blob without decrypting it. */
  describeCiphertext(blob: Uint8Array): { keyId: string; materialVersion: number };
  /** Accepts another caller (e.g. temporary credentials an STS emulator issued); needs `credentials` configured. */
  addCredentials(credentials: KmsEmulatorCredentials): void;
  /** A copy of every key and alias, to start another emulator with (`state`). */
  snapshot(): KmsEmulatorState;
  close(): Promise<void>;
}

interface KmsKey {
  keyId: string;
  arn: string;
  description: string;
  createdAt: Date;
  state: KmsKeyState;
  deletionDate?: Date;
  pendingWindowInDays?: number;
  /** Index i holds material version i + 1. */
  materials: Buffer[];
  onDemandRotations: number;
  denyAll: boolean;
}

type Json = Record<string, unknown>;

class KmsError extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

interface ParsedBlob {
  keyId: string;
  materialVersion: number;
  header: Buffer;
  iv: Buffer;
  tag: Buffer;
  ciphertext: Buffer;
}

class KmsEmulatorServer implements KmsEmulator {
  readonly accountId = KMS_EMULATOR_ACCOUNT_ID;
  readonly faults = new EmulatorFaults<KmsFaultKind>('throttling');
  readonly callsByOp: Record<string, number> = {};
  readonly callsByAccessKeyId: Record<string, number> = {};
  readonly region: string;
  url = '';
  port = 0;
  #requests = 0;
  #closed = false;
  readonly #keys = new Map<string, KmsKey>();
  readonly #aliases = new Map<string, string>();
  #credentials?: KmsEmulatorCredentials[];
  readonly #server: http.Server;
  readonly #operations: Record<string, (input: Json) => Json>;

  constructor(options: KmsEmulatorOptions) {
    this.region = options.region ?? 'us-east-1';
    this.#credentials = options.credentials?.map((c) => ({ ...c }));
    if (options.state) {
      for (const [id, key] of options.state.keys) this.#keys.set(id, copyKey(key as KmsKey));
      for (const [alias, id] of options.state.aliases) this.#aliases.set(alias, id);
    }
    this.#server = http.createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) {
          send(res, 500, { __type: 'KMSInternalException', message: String(error) });
        }
      });
    });
    this.#operations = {
      CreateKey: (i) => this.opCreateKey(i),
      DescribeKey: (i) => this.opDescribeKey(i),
      GenerateDataKey: (i) => this.opGenerateDataKey(i, true),
      GenerateDataKeyWithoutPlaintext: (i) => this.opGenerateDataKey(i, false),
      Encrypt: (i) => this.opEncrypt(i),
      Decrypt: (i) => this.opDecrypt(i),
      ReEncrypt: (i) => this.opReEncrypt(i),
      EnableKey: (i) => this.opSetEnabled(i, true),
      DisableKey: (i) => this.opSetEnabled(i, false),
      ScheduleKeyDeletion: (i) => this.opScheduleKeyDeletion(i),
      CancelKeyDeletion: (i) => this.opCancelKeyDeletion(i),
      CreateAlias: (i) => this.opCreateAlias(i),
      DeleteAlias: (i) => this.opDeleteAlias(i),
      RotateKeyOnDemand: (i) => this.opRotateKeyOnDemand(i),
    };
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

  createKey(options: { description?: string; alias?: string } = {}): KmsKeyHandle {
    const key = this.addKey(options.description ?? '');
    if (options.alias !== undefined) this.addAlias(options.alias, key);
    return { keyId: key.keyId, arn: key.arn };
  }

  setDenyAll(keyRef: string, deny: boolean): void {
    this.resolveKey(keyRef, true).denyAll = deny;
  }

  keyState(keyRef: string): KmsKeyState {
    return this.resolveKey(keyRef, true).state;
  }

  materialVersions(keyRef: string): number {
    return this.resolveKey(keyRef, true).materials.length;
  }

  describeCiphertext(blob: Uint8Array): { keyId: string; materialVersion: number } {
    const parsed = parseBlob(Buffer.from(blob));
    if (!parsed) throw new Error('not a ciphertext blob of this emulator');
    return { keyId: parsed.keyId, materialVersion: parsed.materialVersion };
  }

  addCredentials(credentials: KmsEmulatorCredentials): void {
    if (this.#credentials === undefined)
      throw new Error('this emulator accepts any caller: no credentials to add to');
    this.#credentials.push({ ...credentials });
  }

  snapshot(): KmsEmulatorState {
    return {
      keys: new Map([...this.#keys].map(([id, key]) => [id, copyKey(key)])),
      aliases: new Map(this.#aliases),
    };
  }

  // -------------------------------------------------------------------------------------------------------
  // HTTP
  // -------------------------------------------------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await readBody(req);
    this.#requests += 1;
    const target = header(req, 'x-amz-target') ?? '';
    const op = target.startsWith('TrentService.') ? target.slice('TrentService.'.length) : '(unknown)';
    this.callsByOp[op] = (this.callsByOp[op] ?? 0) + 1;
    const caller = /Credential=([^/,\s]+)\//.exec(header(req, 'authorization') ?? '')?.[1];
    if (caller !== undefined) this.callsByAccessKeyId[caller] = (this.callsByAccessKeyId[caller] ?? 0) + 1;

    await this.faults.apply();
    if (this.#closed || this.faults.redirected(req, res)) return;
    try {
      if (this.faults.shouldFail()) {
        throw this.faults.errorKind === 'internal'
          ? new KmsError('KMSInternalException', 'An internal error occurred.', 500)
          : new KmsError('ThrottlingException', 'Rate exceeded');
      }
      if (req.method !== 'POST' || (req.url ?? '/').split('?')[0] !== '/') {
        throw new KmsError('UnknownOperationException', 'Unknown operation', 404);
      }
      if (body === undefined) throw new KmsError('SerializationException', 'Request body too large');
      this.authenticate(req, body);
      const handler = Object.hasOwn(this.#operations, op) ? this.#operations[op] : undefined;
      if (!handler) throw new KmsError('UnknownOperationException', `Unknown operation ${target}`);
      send(res, 200, handler(parseInput(body)));
    } catch (error) {
      if (!(error instanceof KmsError)) throw error;
      send(res, error.status, { __type: error.type, message: error.message });
    }
  }

  /** SigV4: header shape always; access key, session token and signature when credentials are configured. */
  private authenticate(req: http.IncomingMessage, body: Buffer): void {
    const problem = verifySigV4(req, body, {
      credentials: this.#credentials,
      service: 'kms',
      region: this.region,
    });
    if (problem) throw new KmsError(problem.code, problem.message);
  }

  // -------------------------------------------------------------------------------------------------------
  // Operations
  // -------------------------------------------------------------------------------------------------------

  private opCreateKey(input: Json): Json {
    const keyUsage = optionalString(input, 'KeyUsage') ?? 'ENCRYPT_DECRYPT';
    const keySpec =
      optionalString(input, 'KeySpec') ??
      optionalString(input, 'CustomerMasterKeySpec') ??
      'SYMMETRIC_DEFAULT';
    const origin = optionalString(input, 'Origin') ?? 'AWS_KMS';
    if (keyUsage !== 'ENCRYPT_DECRYPT' || keySpec !== 'SYMMETRIC_DEFAULT' || origin !== 'AWS_KMS') {
      throw new KmsError(
        'UnsupportedOperationException',
        'This emulator supports only SYMMETRIC_DEFAULT ENCRYPT_DECRYPT keys with AWS_KMS origin.',
      );
    }
    const key = this.addKey(optionalString(input, 'Description') ?? '');
    return { KeyMetadata: this.metadata(key) };
  }

  private opDescribeKey(input: Json): Json {
    const key = this.resolveKey(requiredString(input, 'KeyId'), true);
    this.authorize(key, 'DescribeKey');
    return { KeyMetadata: this.metadata(key) };
  }

  private opGenerateDataKey(input: Json, withPlaintext: boolean): Json {
    const key = this.resolveKey(requiredString(input, 'KeyId'), true);
    const keySpec = optionalString(input, 'KeySpec');
    const numberOfBytes = input.NumberOfBytes;
    const context = encryptionContext(input, 'EncryptionContext');
    let length: number;
    if (keySpec !== undefined && numberOfBytes !== undefined) {
      throw new KmsError('ValidationException', 'Please specify either number of bytes or key spec.');
    } else if (keySpec !== undefined) {
      if (keySpec !== 'AES_256' && keySpec !== 'AES_128') {
        throw new KmsError(
          'ValidationException',
          `1 validation error detected: Value '${keySpec}' at 'keySpec' failed to satisfy constraint: ` +
            'Member must satisfy enum value set: [AES_256, AES_128]',
        );
      }
      length = keySpec === 'AES_256' ? 32 : 16;
    } else if (numberOfBytes !== undefined) {
      if (
        !Number.isInteger(numberOfBytes) ||
        (numberOfBytes as number) < 1 ||
        (numberOfBytes as number) > 1024
      ) {
        throw new KmsError(
          'ValidationException',
          "1 validation error detected: Value at 'numberOfBytes' failed to satisfy constraint: " +
            'Member must have value between 1 and 1024',
        );
      }
      length = numberOfBytes as number;
    } else {
      throw new KmsError('ValidationException', 'Please specify either number of bytes or key spec.');
    }
    this.authorize(key, withPlaintext ? 'GenerateDataKey' : 'GenerateDataKeyWithoutPlaintext');
    this.requireUsable(key);
    const plaintext = crypto.randomBytes(length);
    const out: Json = {
      KeyId: key.arn,
      CiphertextBlob: this.seal(key, context, plaintext).toString('base64'),
    };
    if (withPlaintext) out.Plaintext = plaintext.toString('base64');
    return out;
  }

  private opEncrypt(input: Json): Json {
    const key = this.resolveKey(requiredString(input, 'KeyId'), true);
    const plaintext = requiredBlob(input, 'Plaintext');
    if (plaintext.length < 1 || plaintext.length > 4096) {
      throw new KmsError(
        'ValidationException',
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: " +
          'Member must have length between 1 and 4096',
      );
    }
    const context = encryptionContext(input, 'EncryptionContext');
    checkAlgorithm(input, 'EncryptionAlgorithm');
    this.authorize(key, 'Encrypt');
    this.requireUsable(key);
    return {
      KeyId: key.arn,
      CiphertextBlob: this.seal(key, context, plaintext).toString('base64'),
      EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
    };
  }

  private opDecrypt(input: Json): Json {
    const blob = requiredBlob(input, 'CiphertextBlob');
    const context = encryptionContext(input, 'EncryptionContext');
    checkAlgorithm(input, 'EncryptionAlgorithm');
    const { key, plaintext } = this.open(blob, context, optionalString(input, 'KeyId'), 'Decrypt');
    return {
      KeyId: key.arn,
      Plaintext: plaintext.toString('base64'),
      EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
    };
  }

  private opReEncrypt(input: Json): Json {
    const blob = requiredBlob(input, 'CiphertextBlob');
    const destination = this.resolveKey(requiredString(input, 'DestinationKeyId'), true);
    const sourceContext = encryptionContext(input, 'SourceEncryptionContext');
    const destinationContext = encryptionContext(input, 'DestinationEncryptionContext');
    checkAlgorithm(input, 'SourceEncryptionAlgorithm');
    checkAlgorithm(input, 'DestinationEncryptionAlgorithm');
    const source = this.open(blob, sourceContext, optionalString(input, 'SourceKeyId'), 'ReEncryptFrom');
    try {
      this.authorize(destination, 'ReEncryptTo');
      this.requireUsable(destination);
      return {
        SourceKeyId: source.key.arn,
        KeyId: destination.arn,
        CiphertextBlob: this.seal(destination, destinationContext, source.plaintext).toString('base64'),
        SourceEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
        DestinationEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      };
    } finally {
      source.plaintext.fill(0);
    }
  }

  private opSetEnabled(input: Json, enabled: boolean): Json {
    const key = this.resolveKey(requiredString(input, 'KeyId'), false);
    this.authorize(key, enabled ? 'EnableKey' : 'DisableKey');
    if (key.state === 'PendingDeletion') throw pendingDeletion(key);
    key.state = enabled ? 'Enabled' : 'Disabled';
    return {};
  }

  private opScheduleKeyDeletion(input: Json): Json {
    const key = this.resolveKey(requiredString(input, 'KeyId'), false);
    const window = input.PendingWindowInDays ?? 30;
    if (!Number.isInteger(window) || (window as number) < 7 || (window as number) > 30) {
      throw new KmsError(
        'ValidationException',
        "1 validation error detected: Value at 'pendingWindowInDays' failed to satisfy constraint: " +
          'Member must have value between 7 and 30',
      );
    }
    this.authorize(key, 'ScheduleKeyDeletion');
    if (key.state === 'PendingDeletion') throw pendingDeletion(key);
    key.state = 'PendingDeletion';
    key.pendingWindowInDays = window as number;
    key.deletionDate = new Date(Date.now() + (window as number) * 24 * 60 * 60 * 1000);
    return {
      KeyId: key.arn,
      DeletionDate: epochSeconds(key.deletionDate),
      KeyState: key.state,
      PendingWindowInDays: key.pendingWindowInDays,
    };
  }

  private opCancelKeyDeletion(input: Json): Json {
    const key = this.resolveKey(requiredString(input, 'KeyId'), false);
    this.authorize(key, 'CancelKeyDeletion');
    if (key.state !== 'PendingDeletion') {
      throw new KmsError('KMSInvalidStateException', `${key.arn} is not pending deletion.`);
    }
    key.state = 'Disabled';
    key.deletionDate = undefined;
    key.pendingWindowInDays = undefined;
    return { KeyId: key.arn };
  }

  private opCreateAlias(input: Json): Json {
    const aliasName = requiredString(input, 'AliasName');
    const key = this.resolveKey(requiredString(input, 'TargetKeyId'), false);
    this.authorize(key, 'CreateAlias');
    if (key.state === 'PendingDeletion') throw pendingDeletion(key);
    this.addAlias(aliasName, key);
    return {};
  }

  private opDeleteAlias(input: Json): Json {
    const aliasName = requiredString(input, 'AliasName');
    if (!this.#aliases.delete(aliasName)) {
      throw new KmsError('NotFoundException', `Alias ${this.aliasArn(aliasName)} is not found.`);
    }
    return {};
  }

  private opRotateKeyOnDemand(input: Json): Json {
    const key = this.resolveKey(requiredString(input, 'KeyId'), false);
    this.authorize(key, 'RotateKeyOnDemand');
    this.requireUsable(key);
    if (key.onDemandRotations >= MAX_ON_DEMAND_ROTATIONS) {
      throw new KmsError(
        'LimitExceededException',
        `The on-demand rotations limit has been reached for the given key ${key.keyId}.`,
      );
    }
    key.onDemandRotations += 1;
    key.materials.push(crypto.randomBytes(32));
    return { KeyId: key.keyId };
  }

  // -------------------------------------------------------------------------------------------------------
  // Keys, aliases and cryptography
  // -------------------------------------------------------------------------------------------------------

  private addKey(description: string): KmsKey {
    const keyId = crypto.randomUUID();
    const key: KmsKey = {
      keyId,
      arn: `arn:aws:kms:${this.region}:${this.accountId}:key/${keyId}`,
      description,
      createdAt: new Date(),
      state: 'Enabled',
      materials: [crypto.randomBytes(32)],
      onDemandRotations: 0,
      denyAll: false,
    };
    this.#keys.set(keyId, key);
    return key;
  }

  private addAlias(aliasName: string, key: KmsKey): void {
    if (!ALIAS_NAME_PATTERN.test(aliasName) || aliasName.startsWith('alias/aws/')) {
      throw new KmsError(
        'ValidationException',
        "Alias must start with the prefix \"alias/\" followed by letters, digits, '/', '_' or '-', and must " +
          'not begin with "alias/aws/".',
      );
    }
    if (this.#aliases.has(aliasName)) {
      throw new KmsError(
        'AlreadyExistsException',
        `An alias with the name ${this.aliasArn(aliasName)} already exists`,
      );
    }
    this.#aliases.set(aliasName, key.keyId);
  }

  private aliasArn(aliasName: string): string {
    return `arn:aws:kms:${this.region}:${this.accountId}:${aliasName}`;
  }

  /**
   * Resolves a key id, key ARN, alias name or alias ARN. Key-management operations (enable, disable, schedule
   * deletion, rotate, alias targets) take only a key id or key ARN, as in KMS.
   */
  private resolveKey(ref: string, allowAlias: boolean): KmsKey {
    const arnPrefix = `arn:aws:kms:${this.region}:${this.accountId}:`;
    let keyId: string | undefined;
    let aliasName: string | undefined;
    if (ref.startsWith('arn:')) {
      if (!ref.startsWith(arnPrefix)) throw new KmsError('NotFoundException', `Invalid arn ${ref}`);
      const resource = ref.slice(arnPrefix.length);
      if (resource.startsWith('key/')) keyId = resource.slice('key/'.length);
      else if (resource.startsWith('alias/')) aliasName = resource;
      else throw new KmsError('NotFoundException', `Invalid arn ${ref}`);
    } else if (ref.startsWith('alias/')) {
      aliasName = ref;
    } else {
      keyId = ref;
    }
    if (aliasName !== undefined) {
      if (!allowAlias) throw new KmsError('NotFoundException', `Invalid keyId ${ref}`);
      keyId = this.#aliases.get(aliasName);
      if (keyId === undefined) {
        throw new KmsError('NotFoundException', `Alias ${this.aliasArn(aliasName)} is not found.`);
      }
    }
    const key = keyId === undefined ? undefined : this.#keys.get(keyId);
    if (!key) {
      throw new KmsError(
        'NotFoundException',
        keyId !== undefined && /^[0-9a-f-]{36}$/.test(keyId)
          ? `Key '${arnPrefix}key/${keyId}' does not exist`
          : `Invalid keyId ${ref}`,
      );
    }
    return key;
  }

  private authorize(key: KmsKey, action: string): void {
    if (key.denyAll) {
      throw new KmsError(
        'AccessDeniedException',
        `User: arn:aws:iam::${this.accountId}:user/kms-emulator-caller is not authorized to perform: ` +
          `kms:${action} on resource: ${key.arn} because no resource-based policy allows the kms:${action} action`,
      );
    }
  }

  private requireUsable(key: KmsKey): void {
    if (key.state === 'Disabled') throw new KmsError('DisabledException', `${key.arn} is disabled.`);
    if (key.state === 'PendingDeletion') throw pendingDeletion(key);
  }

  private seal(key: KmsKey, context: Record<string, string>, plaintext: Buffer): Buffer {
    const materialVersion = key.materials.length;
    const keyIdBytes = Buffer.from(key.keyId, 'ascii');
    const version = Buffer.alloc(4);
    version.writeUInt32BE(materialVersion);
    const header = Buffer.concat([MAGIC, Buffer.of(FORMAT_VERSION, keyIdBytes.length), keyIdBytes, version]);
    const iv = crypto.randomBytes(IV_BYTES);
    const cipher = crypto.createCipheriv('aes-256-gcm', key.materials[materialVersion - 1], iv, {
      authTagLength: TAG_BYTES,
    });
    cipher.setAAD(Buffer.concat([header, canonicalContext(context)]));
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([header, iv, cipher.getAuthTag(), ciphertext]);
  }

  /** Decrypt's checks in KMS's order: blob, requested key, permission, key state, then the AEAD. */
  private open(
    blob: Buffer,
    context: Record<string, string>,
    requestedKeyRef: string | undefined,
    action: string,
  ): { key: KmsKey; plaintext: Buffer } {
    const parsed = parseBlob(blob);
    if (!parsed) throw invalidCiphertext();
    if (requestedKeyRef !== undefined) {
      const requested = this.resolveKey(requestedKeyRef, true);
      if (requested.keyId !== parsed.keyId) {
        throw new KmsError(
          'IncorrectKeyException',
          'The key ID in the request does not identify a CMK that can perform this operation.',
        );
      }
    }
    const key = this.#keys.get(parsed.keyId);
    if (!key) throw invalidCiphertext();
    this.authorize(key, action);
    this.requireUsable(key);
    const material = key.materials[parsed.materialVersion - 1];
    if (material === undefined) throw invalidCiphertext();
    try {
      const decipher = crypto.createDecipheriv('aes-256-gcm', material, parsed.iv, {
        authTagLength: TAG_BYTES,
      });
      decipher.setAAD(Buffer.concat([parsed.header, canonicalContext(context)]));
      decipher.setAuthTag(parsed.tag);
      return { key, plaintext: Buffer.concat([decipher.update(parsed.ciphertext), decipher.final()]) };
    } catch {
      throw invalidCiphertext();
    }
  }

  private metadata(key: KmsKey): Json {
    return {
      AWSAccountId: this.accountId,
      KeyId: key.keyId,
      Arn: key.arn,
      CreationDate: epochSeconds(key.createdAt),
      Enabled: key.state === 'Enabled',
      Description: key.description,
      KeyUsage: 'ENCRYPT_DECRYPT',
      KeyState: key.state,
      ...(key.deletionDate
        ? {
            DeletionDate: epochSeconds(key.deletionDate),
            PendingDeletionWindowInDays: key.pendingWindowInDays,
          }
        : {}),
      Origin: 'AWS_KMS',
      KeyManager: 'CUSTOMER',
      CustomerMasterKeySpec: 'SYMMETRIC_DEFAULT',
      KeySpec: 'SYMMETRIC_DEFAULT',
      EncryptionAlgorithms: ['SYMMETRIC_DEFAULT'],
      MultiRegion: false,
    };
  }
}

export async function startKmsEmulator(options: KmsEmulatorOptions = {}): Promise<KmsEmulator> {
  const emulator = new KmsEmulatorServer(options);
  await emulator.start(options.port ?? 0, options.host ?? '127.0.0.1');
  return emulator;
}

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

/** A SigV4 failure, named as AWS names it (KMS's JSON `__type`, STS's XML `Code`). */
export interface SigV4Problem {
  code: string;
  message: string;
}

/**
 * Checks a request's SigV4 `Authorization` header: its shape always; with `credentials`, the access key id, the
 * session token, the scope (service and region), the clock and the signature itself. Undefined when it holds.
 */
export function verifySigV4(
  req: http.IncomingMessage,
  body: Buffer,
  expected: { credentials: KmsEmulatorCredentials[] | undefined; service: string; region: string },
): SigV4Problem | undefined {
  const authorization = header(req, 'authorization');
  if (authorization === undefined) {
    return fail('MissingAuthenticationTokenException', 'Missing Authentication Token');
  }
  const match = SIGV4_AUTHORIZATION.exec(authorization);
  if (!match) {
    return fail(
      'IncompleteSignatureException',
      "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' (AWS4-HMAC-SHA256).",
    );
  }
  const [, accessKeyId, scopeDate, scopeRegion, scopeService, signedHeaderList, signature] = match;
  if (expected.credentials === undefined) return undefined;

  const credentials = expected.credentials.find((c) => c.accessKeyId === accessKeyId);
  if (!credentials) {
    return fail('UnrecognizedClientException', 'The security token included in the request is invalid.');
  }
  if (
    credentials.sessionToken !== undefined &&
    header(req, 'x-amz-security-token') !== credentials.sessionToken
  ) {
    return fail('UnrecognizedClientException', 'The security token included in the request is invalid.');
  }
  if (scopeService !== expected.service) {
    return fail(
      'InvalidSignatureException',
      `Credential should be scoped to correct service: '${expected.service}'.`,
    );
  }
  if (scopeRegion !== expected.region) {
    return fail(
      'InvalidSignatureException',
      `Credential should be scoped to a valid region, not '${scopeRegion}'.`,
    );
  }
  const amzDate = header(req, 'x-amz-date') ?? '';
  const time = parseAmzDate(amzDate);
  if (time === undefined || amzDate.slice(0, 8) !== scopeDate) {
    return fail('IncompleteSignatureException', 'The x-amz-date header is missing or malformed.');
  }
  if (Math.abs(Date.now() - time) > MAX_CLOCK_SKEW_MS) {
    return fail('InvalidSignatureException', `Signature expired: ${amzDate} is outside the allowed skew.`);
  }
  const signedHeaders = signedHeaderList.split(';');
  if (!signedHeaders.includes('host') || !signedHeaders.includes('x-amz-date')) {
    return fail('IncompleteSignatureException', 'The host and x-amz-date headers must be signed.');
  }
  const [path, query = ''] = (req.url ?? '/').split('?', 2);
  const canonicalRequest = [
    req.method ?? 'POST',
    canonicalUri(path),
    canonicalQuery(query),
    signedHeaders
      .map((name) => `${name}:${(header(req, name) ?? '').trim().replace(/\s+/g, ' ')}\n`)
      .join(''),
    signedHeaderList,
    sha256Hex(body),
  ].join('\n');
  const scope = `${scopeDate}/${scopeRegion}/${scopeService}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(Buffer.from(canonicalRequest))].join(
    '\n',
  );
  let signingKey = hmac(Buffer.from(`AWS4${credentials.secretAccessKey}`, 'utf8'), scopeDate);
  for (const part of [scopeRegion, scopeService, 'aws4_request']) signingKey = hmac(signingKey, part);
  const computed = hmac(signingKey, stringToSign);
  if (!crypto.timingSafeEqual(computed, Buffer.from(signature, 'hex'))) {
    return fail(
      'InvalidSignatureException',
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret ' +
        'Access Key and signing method. Consult the service documentation for details.',
    );
  }
  return undefined;
}

const fail = (code: string, message: string): SigV4Problem => ({ code, message });

function copyKey(key: KmsKey): KmsKey {
  return { ...key, materials: key.materials.map((m) => Buffer.from(m)) };
}

function send(res: http.ServerResponse, status: number, payload: Json): void {
  const body = JSON.stringify(payload);
  res.writeHead(status, {
    'content-type': 'application/x-amz-json-1.1',
    'content-length': Buffer.byteLength(body),
    'x-amzn-requestid': crypto.randomUUID(),
  });
  res.end(body);
}

function header(req: http.IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

function parseInput(body: Buffer): Json {
  if (body.length === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new KmsError('SerializationException', 'Start of structure or map found where not expected.');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new KmsError('SerializationException', 'Start of structure or map found where not expected.');
  }
  return parsed as Json;
}

function memberName(name: string): string {
  return name.charAt(0).toLowerCase() + name.slice(1);
}

function optionalString(input: Json, name: string): string | undefined {
  const value = input[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') {
    throw new KmsError('SerializationException', `STRING_VALUE can not be converted to ${name}`);
  }
  return value;
}

function requiredString(input: Json, name: string): string {
  const value = optionalString(input, name);
  if (value === undefined || value.length === 0) {
    throw new KmsError(
      'ValidationException',
      `1 validation error detected: Value null at '${memberName(name)}' failed to satisfy constraint: ` +
        'Member must not be null',
    );
  }
  return value;
}

function requiredBlob(input: Json, name: string): Buffer {
  const bytes = decodeStrictBase64(requiredString(input, name));
  if (bytes === undefined) throw new KmsError('SerializationException', `Could not base64-decode ${name}`);
  return bytes;
}

function encryptionContext(input: Json, name: string): Record<string, string> {
  const value = input[name];
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new KmsError('SerializationException', `${name} must be a map of strings`);
  }
  for (const entry of Object.values(value as Json)) {
    if (typeof entry !== 'string')
      throw new KmsError('SerializationException', `${name} must be a map of strings`);
  }
  return value as Record<string, string>;
}

function checkAlgorithm(input: Json, name: string): void {
  const algorithm = optionalString(input, name);
  if (algorithm !== undefined && algorithm !== 'SYMMETRIC_DEFAULT') {
    throw new KmsError(
      'InvalidKeyUsageException',
      `The ${algorithm} algorithm is not supported by a SYMMETRIC_DEFAULT key.`,
    );
  }
}

/** The context's entries sorted by key, as JSON: one encoding per map, so an exact match is required. */
function canonicalContext(context: Record<string, string>): Buffer {
  const entries = Object.entries(context).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return Buffer.from(JSON.stringify(entries), 'utf8');
}

function parseBlob(blob: Buffer): ParsedBlob | undefined {
  if (blob.length < MAGIC.length + 2 || !blob.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  if (blob[MAGIC.length] !== FORMAT_VERSION) return undefined;
  const idLength = blob[MAGIC.length + 1];
  const idOffset = MAGIC.length + 2;
  const versionOffset = idOffset + idLength;
  const ivOffset = versionOffset + 4;
  const tagOffset = ivOffset + IV_BYTES;
  const ciphertextOffset = tagOffset + TAG_BYTES;
  if (blob.length < ciphertextOffset) return undefined;
  const materialVersion = blob.readUInt32BE(versionOffset);
  if (materialVersion < 1) return undefined;
  return {
    keyId: blob.subarray(idOffset, versionOffset).toString('latin1'),
    materialVersion,
    header: blob.subarray(0, ivOffset),
    iv: blob.subarray(ivOffset, tagOffset),
    tag: blob.subarray(tagOffset, ciphertextOffset),
    ciphertext: blob.subarray(ciphertextOffset),
  };
}

function invalidCiphertext(): KmsError {
  return new KmsError(
    'InvalidCiphertextException',
    'The ciphertext is invalid or its encryption context differs.',
  );
}

function pendingDeletion(key: KmsKey): KmsError {
  return new KmsError('KMSInvalidStateException', `${key.arn} is pending deletion.`);
}

function epochSeconds(date: Date): number {
  return date.getTime() / 1000;
}

function parseAmzDate(value: string): number | undefined {
  const match = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!match) return undefined;
  const [, y, mo, d, h, mi, s] = match.map(Number);
  return Date.UTC(y, mo - 1, d, h, mi, s);
}

function sha256Hex(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

function hmac(key: Buffer, data: string): Buffer {
  return crypto.createHmac('sha256', key).update(data, 'utf8').digest();
}

/** RFC 3986 encoding as SigV4 wants it (encodeURIComponent leaves !'()* alone). */
function sigv4Encode(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function canonicalUri(path: string): string {
  return path
    .split('/')
    .map((segment) => sigv4Encode(safeDecode(segment)))
    .join('/');
}

function canonicalQuery(query: string): string {
  if (query === '') return '';
  return query
    .split('&')
    .map((pair) => {
      const [name, value = ''] = pair.split('=', 2);
      return [sigv4Encode(safeDecode(name)), sigv4Encode(safeDecode(value))] as const;
    })
    .sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join('&');
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
