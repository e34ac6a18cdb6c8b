/**
 * The sealed `requestState` of the 2026-07-28 consent flow: AES-256-GCM over a small JSON payload (the user,
 * the tool call, the expiry and the connect session), so the client can neither read nor alter it.
 *
 * Why not the MCP SDK's own `createRequestStateCodec` (HMAC-SHA256, signed only): its expiry is one fixed TTL
 * per codec in whole seconds, while this state must die with its connect link (whatever is left of it, at
 * most ten minutes); its binding is a function of the ServerContext, which does not carry the tool name or
 * arguments the state must be bound to; it reports every binding failure as one reason; and the payload is
 * readable by the client (here it names the user and the tenant's connect session). Encrypting costs nothing
 * more and makes the state truly opaque, as the spec asks of clients anyway.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';

/** Every Custos state starts with this; the version lets the format change without misreading old states. */
export const REQUEST_STATE_PREFIX = 'custos1.';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const MIN_KEY_BYTES = 32;

export interface ConsentState {
  /** The authenticated principal the consent request was issued to. */
  user: string;
  /** The tool it was issued for. */
  tool: string;
  /** argumentsDigest() of the call's arguments. */
  args: string;
  /** Epoch milliseconds after which the state is refused. */
  expiresAt: number;
  /** The connect session to wait for on the retry. */
  sessionId: string;
  sessionUri: string;
}

interface Wire {
  u: string;
  t: string;
  a: string;
  e: number;
  i: string;
  s: string;
}

const b64url = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64url');

/** Seals and opens consent states under one key; the same key must be configured on every server instance. */
export class RequestStateSealer {
  private readonly key: Buffer;

  constructor(key: Uint8Array | string) {
    const material = typeof key === 'string' ? Buffer.from(key, 'utf8') : Buffer.from(key);
    if (material.length < MIN_KEY_BYTES) {
      throw new RangeError(`the requestState key must be at least ${MIN_KEY_BYTES} bytes long`);
    }
    // A key of its own for this one use, so the configured secret may also serve elsewhere without reuse.
    this.key = Buffer.from(hkdfSync('sha256', material, Buffer.alloc(0), 'custos mcp requestState v1', 32));
  }

  seal(state: ConsentState): string {
    const wire: Wire = {
      u: state.user,
      t: state.tool,
      a: state.args,
      e: state.expiresAt,
      i: state.sessionId,
      s: state.sessionUri,
    };
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(REQUEST_STATE_PREFIX));
    const body = Buffer.concat([cipher.update(JSON.stringify(wire), 'utf8'), cipher.final()]);
    return REQUEST_STATE_PREFIX + b64url(Buffer.concat([iv, body, cipher.getAuthTag()]));
  }

  /** The state, or undefined when it is not one this key sealed (malformed, altered, other key). */
  open(sealed: string): ConsentState | undefined {
    if (!sealed.startsWith(REQUEST_STATE_PREFIX)) return undefined;
    const encoded = sealed.slice(REQUEST_STATE_PREFIX.length);
    if (!/^[A-Za-z0-9_-]+$/.test(encoded)) return undefined;
    const raw = Buffer.from(encoded, 'base64url');
    if (raw.length <= IV_BYTES + TAG_BYTES) return undefined;
    let wire: unknown;
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(REQUEST_STATE_PREFIX));
      decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
      const plain = Buffer.concat([
        decipher.update(raw.subarray(IV_BYTES, raw.length - TAG_BYTES)),
        decipher.final(),
      ]);
      wire = JSON.parse(plain.toString('utf8'));
    } catch {
      return undefined;
    }
    if (!isWire(wire)) return undefined;
    return {
      user: wire.u,
      tool: wire.t,
      args: wire.a,
      expiresAt: wire.e,
      sessionId: wire.i,
      sessionUri: wire.s,
    };
  }
}

function isWire(value: unknown): value is Wire {
  if (typeof value !== 'object' || value === null) return false;
  const w = value as Record<string, unknown>;
  return (
    typeof w.u === 'string' &&
    typeof w.t === 'string' &&
    typeof w.a === 'string' &&
    typeof w.e === 'number' &&
    typeof w.i === 'string' &&
    typeof w.s === 'string'
  );
}

/**
 * JSON with object keys sorted (RFC 8785's ordering, by UTF-16 code units) and no insignificant whitespace:
 * the same arguments give the same text whatever order the client sent them in.
 */
export function canonicalJson(value: unknown): string {
  const v: unknown =
    value !== null &&
    typeof value === 'object' &&
    typeof (value as { toJSON?: unknown }).toJSON === 'function'
      ? (value as { toJSON(): unknown }).toJSON()
      : value;
  if (v === undefined) return 'null';
  if (v === null || typeof v !== 'object') {
    if (typeof v === 'number' && !Number.isFinite(v)) return 'null';
    const text = JSON.stringify(v) as string | undefined;
    // Functions and symbols have no JSON form; they never come from a parsed tool call.
    return text ?? 'null';
  }
  if (Array.isArray(v)) return `[${v.map((item) => canonicalJson(item)).join(',')}]`;
  const record = v as Record<string, unknown>;
  const keys = Object.keys(record)
    .filter((k) => record[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(record[k])}`).join(',')}}`;
}

/** SHA-256 of the canonical JSON of a tool call's arguments, base64url. */
export function argumentsDigest(args: unknown): string {
  return createHash('sha256').update(canonicalJson(args)).digest('base64url');
}
