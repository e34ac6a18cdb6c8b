/**
 * An AWS STS emulator for tests: a node:http server that speaks STS's query protocol (`POST /` with a form body
 * `Action=AssumeRole&Version=2011-06-15&…`, SigV4 signed for service `sts`, XML answers and XML errors) closely
 * enough that the real `@aws-sdk/client-sts` talks to it unchanged. Only AssumeRole exists.
 *
 * Callers are authenticated like AWS does (SigV4 with one of `callers`). A role trusts the callers named in its
 * trust (by access key id) and, when it has one, requires the `ExternalId` given to `addRole`, as a trust policy
 * with `sts:ExternalId` does; anything else is AccessDenied. Issued credentials are temporary (ASIA…, with a
 * session token and an expiration) and are handed to `onIssue`, so a KMS emulator can accept them.
 *
 * Fault knobs (`faults`): as the other emulators (latency, errors as 500 InternalFailure, hang, redirectTo).
 */
import crypto from 'node:crypto';
import http from 'node:http';
import {
  EmulatorFaults,
  listen,
  readBody,
  shutDown,
  verifySigV4,
  type KmsEmulatorCredentials,
} from './kms-emulator.js';

export const STS_EMULATOR_ACCOUNT_ID = '111122223333';

const ROLE_ARN = /^arn:aws:iam::(\d{12}):role\/[\w+=,.@/-]{1,512}$/;
const SESSION_NAME = /^[\w+=,.@-]{2,64}$/;
const EXTERNAL_ID = /^[\w+=,.@:/-]{2,1224}$/;

export interface StsEmulatorOptions {
  port?: number;
  host?: string;
  /** The region of the SigV4 scope. Default us-east-1. */
  region?: string;
  /** Who may call STS (Custos's own identity in the tests). */
  callers: KmsEmulatorCredentials[];
  /** Called with every credential issued (e.g. `kms.addCredentials`). */
  onIssue?: (credentials: Required<KmsEmulatorCredentials>) => void;
}

export interface StsRole {
  /** Access key ids of the callers the role's trust policy names. */
  trustedCallers: string[];
  /** The `sts:ExternalId` condition of the trust policy, when it has one. */
  externalId?: string;
}

export interface StsEmulator {
  readonly url: string;
  readonly port: number;
  readonly region: string;
  readonly faults: EmulatorFaults<'internal'>;
  readonly requests: number;
  readonly callsByOp: Record<string, number>;
  /** Every AssumeRole that succeeded: which role, with which external id, for which caller. */
  readonly issued: { roleArn: string; externalId?: string; caller: string; accessKeyId: string }[];
  addRole(roleArn: string, role: StsRole): void;
  removeRole(roleArn: string): void;
  close(): Promise<void>;
}

class StsError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status = 400,
    readonly type: 'Sender' | 'Receiver' = 'Sender',
  ) {
    super(message);
  }
}

class StsEmulatorServer implements StsEmulator {
  readonly faults = new EmulatorFaults<'internal'>('internal');
  readonly callsByOp: Record<string, number> = {};
  readonly issued: StsEmulator['issued'] = [];
  readonly region: string;
  url = '';
  port = 0;
  #requests = 0;
  #closed = false;
  readonly #callers: KmsEmulatorCredentials[];
  readonly #onIssue?: StsEmulatorOptions['onIssue'];
  readonly #roles = new Map<string, StsRole>();
  readonly #server: http.Server;

  constructor(options: StsEmulatorOptions) {
    this.region = options.region ?? 'us-east-1';
    this.#callers = options.callers.map((c) => ({ ...c }));
    this.#onIssue = options.onIssue;
    this.#server = http.createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) sendError(res, new StsError('InternalFailure', String(error), 500, 'Receiver'));
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

  addRole(roleArn: string, role: StsRole): void {
    if (!ROLE_ARN.test(roleArn)) throw new Error(`not a role ARN: ${roleArn}`);
    this.#roles.set(roleArn, { ...role, trustedCallers: [...role.trustedCallers] });
  }

  removeRole(roleArn: string): void {
    this.#roles.delete(roleArn);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await readBody(req);
    this.#requests += 1;
    const params = new URLSearchParams(body?.toString('utf8') ?? '');
    const action = params.get('Action') ?? '(unknown)';
    this.callsByOp[action] = (this.callsByOp[action] ?? 0) + 1;
    await this.faults.apply();
    if (this.#closed || this.faults.redirected(req, res)) return;
    try {
      if (this.faults.shouldFail()) throw new StsError('InternalFailure', 'An internal error occurred.', 500);
      if (req.method !== 'POST' || body === undefined) {
        throw new StsError('InvalidAction', 'Could not find operation for this request', 400);
      }
      const problem = verifySigV4(req, body, {
        credentials: this.#callers,
        service: 'sts',
        region: this.region,
      });
      if (problem) {
        // STS names the unknown-key and bad-signature cases its own way.
        const code =
          problem.code === 'UnrecognizedClientException'
            ? 'InvalidClientTokenId'
            : problem.code === 'InvalidSignatureException'
              ? 'SignatureDoesNotMatch'
              : problem.code.replace(/Exception$/, '');
        throw new StsError(code, problem.message, 403);
      }
      if (params.get('Version') !== '2011-06-15') {
        throw new StsError('InvalidAction', 'Could not find operation for this API version', 400);
      }
      if (action !== 'AssumeRole')
        throw new StsError('InvalidAction', `Could not find operation ${action}`, 400);
      const caller = /Credential=([^/,\s]+)\//.exec(req.headers.authorization ?? '')?.[1] ?? '';
      sendXml(res, 200, this.assumeRole(params, caller));
    } catch (error) {
      if (!(error instanceof StsError)) throw error;
      sendError(res, error);
    }
  }

  private assumeRole(params: URLSearchParams, caller: string): string {
    const roleArn = params.get('RoleArn') ?? '';
    const sessionName = params.get('RoleSessionName') ?? '';
    const externalId = params.get('ExternalId') ?? undefined;
    const duration = Number(params.get('DurationSeconds') ?? '3600');
    if (!ROLE_ARN.test(roleArn)) {
      throw new StsError(
        'ValidationError',
        `1 validation error detected: Value '${roleArn}' at 'roleArn' failed to satisfy constraint`,
      );
    }
    if (!SESSION_NAME.test(sessionName)) {
      throw new StsError(
        'ValidationError',
        "1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint",
      );
    }
    if (externalId !== undefined && !EXTERNAL_ID.test(externalId)) {
      throw new StsError(
        'ValidationError',
        "1 validation error detected: Value at 'externalId' failed to satisfy constraint",
      );
    }
    if (!Number.isInteger(duration) || duration < 900 || duration > 43200) {
      throw new StsError(
        'ValidationError',
        "1 validation error detected: Value at 'durationSeconds' failed to satisfy constraint",
      );
    }
    const role = this.#roles.get(roleArn);
    if (
      !role ||
      !role.trustedCallers.includes(caller) ||
      (role.externalId !== undefined && role.externalId !== externalId)
    ) {
      throw new StsError(
        'AccessDenied',
        `User: arn:aws:iam::${STS_EMULATOR_ACCOUNT_ID}:user/custos is not authorized to perform: sts:AssumeRole on resource: ${roleArn}`,
        403,
      );
    }
    const issued = {
      accessKeyId: `ASIA${crypto.randomBytes(8).toString('hex').toUpperCase()}`,
      secretAccessKey: crypto.randomBytes(30).toString('base64'),
      sessionToken: crypto.randomBytes(96).toString('base64'),
    };
    this.#onIssue?.(issued);
    this.issued.push({
      roleArn,
      ...(externalId ? { externalId } : {}),
      caller,
      accessKeyId: issued.accessKeyId,
    });
    const expiration = new Date(Date.now() + duration * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const roleName = roleArn.slice(roleArn.indexOf(':role/') + ':role/'.length);
    const roleId = `AROA${crypto.createHash('sha256').update(roleArn).digest('hex').slice(0, 17).toUpperCase()}`;
    const account = ROLE_ARN.exec(roleArn)?.[1] ?? STS_EMULATOR_ACCOUNT_ID;
    return [
      '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">',
      '  <AssumeRoleResult>',
      '    <AssumedRoleUser>',
      `      <AssumedRoleId>${roleId}:${escapeXml(sessionName)}</AssumedRoleId>`,
      `      <Arn>arn:aws:sts::${account}:assumed-role/${escapeXml(roleName)}/${escapeXml(sessionName)}</Arn>`,
      '    </AssumedRoleUser>',
      '    <Credentials>',
      `      <AccessKeyId>${issued.accessKeyId}</AccessKeyId>`,
      `      <SecretAccessKey>${issued.secretAccessKey}</SecretAccessKey>`,
      `      <SessionToken>${issued.sessionToken}</SessionToken>`,
      `      <Expiration>${expiration}</Expiration>`,
      '    </Credentials>',
      '  </AssumeRoleResult>',
      '  <ResponseMetadata>',
      `    <RequestId>${crypto.randomUUID()}</RequestId>`,
      '  </ResponseMetadata>',
      '</AssumeRoleResponse>',
    ].join('\n');
  }
}

export async function startStsEmulator(options: StsEmulatorOptions): Promise<StsEmulator> {
  const emulator = new StsEmulatorServer(options);
  await emulator.start(options.port ?? 0, options.host ?? '127.0.0.1');
  return emulator;
}

function escapeXml(value: string): string {
  return value.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function sendXml(res: http.ServerResponse, status: number, xml: string): void {
  res.writeHead(status, {
    'content-type': 'text/xml',
    'content-length': Buffer.byteLength(xml),
    'x-amzn-requestid': crypto.randomUUID(),
  });
  res.end(xml);
}

function sendError(res: http.ServerResponse, error: StsError): void {
  sendXml(
    res,
    error.status,
    [
      '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">',
      '  <Error>',
      `    <Type>${error.type}</Type>`,
      `    <Code>${error.code}</Code>`,
      `    <Message>${escapeXml(error.message)}</Message>`,
      '  </Error>',
      `  <RequestId>${crypto.randomUUID()}</RequestId>`,
      '</ErrorResponse>',
    ].join('\n'),
  );
}
