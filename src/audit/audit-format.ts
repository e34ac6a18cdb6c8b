/**
 * The sealed audit format, version 1 ("custos-audit/1"): how events are encoded, chained and signed, and how
 * an export is verified. Pure functions, no database: the sealer, the export and `custos audit verify` all use
 * this one module, and docs/audit-format.md describes the same thing for independent verifiers.
 *
 *   chain        "tenant:<tenant id>" or "platform"
 *   event line   {"kind":"event","chain","pos","id","occurredAt","action","outcome","actor":{"type","id"},
 *                 "subjectUserId","connectionId","provider","requestId","details","head"}
 *   entry hash   SHA-256(JCS(event line without "head"))                        (JCS: RFC 8785)
 *   genesis      SHA-256(UTF-8("custos-audit/1 genesis " + chain))
 *   head(pos)    SHA-256(head(pos - 1) ‖ entry hash(pos))                       (32 + 32 raw bytes)
 *   checkpoint   {"kind":"checkpoint","format","chain","seq","firstPos","lastPos","count","firstEventId",
 *                 "lastEventId","prevHead","head","sealedAt","kid","sig"}
 *   signature    Ed25519 over UTF-8(JCS(checkpoint without "sig")), base64url without padding
 *
 * Heads are lowercase hex. Positions start at 1 and are consecutive in a chain; checkpoint seq starts at 1, and
 * each checkpoint's prevHead is the previous one's head (the first one's is the genesis head).
 */
import crypto from 'node:crypto';
import canonicalize from 'canonicalize';

export const AUDIT_FORMAT = 'custos-audit/1';

export type ChainId = 'platform' | `tenant:${string}`;

export function chainOf(tenantId: string | null): ChainId {
  return tenantId === null ? 'platform' : `tenant:${tenantId}`;
}

export function tenantOfChain(chain: string): string | null {
  return chain === 'platform' ? null : chain.slice('tenant:'.length);
}

export interface EventLine {
  kind: 'event';
  chain: string;
  pos: number;
  id: string;
  occurredAt: string;
  action: string;
  outcome: string;
  actor: { type: string; id: string | null };
  subjectUserId: string | null;
  connectionId: string | null;
  provider: string | null;
  requestId: string | null;
  details: unknown;
  /** The chain head after this event, as the sealer stored it (not hashed; the verifier recomputes it). */
  head?: string;
}

export interface CheckpointBody {
  kind: 'checkpoint';
  format: typeof AUDIT_FORMAT;
  chain: string;
  seq: number;
  firstPos: number;
  lastPos: number;
  count: number;
  firstEventId: string;
  lastEventId: string;
  prevHead: string;
  head: string;
  sealedAt: string;
  kid: string;
}

export interface CheckpointLine extends CheckpointBody {
  sig: string;
}

export interface ExportHeader {
  kind: 'export';
  format: typeof AUDIT_FORMAT;
  chain: string;
  from: string | null;
  to: string | null;
  exportedAt: string;
}

/** An Ed25519 public key as published in the JWKS, with the window in which it signs checkpoints. */
export interface AuditJwk {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
  kid: string;
  alg: 'EdDSA';
  use: 'sig';
  validFrom: string;
  validUntil?: string;
}

function sha256(data: Buffer | string): Buffer {
  return crypto.createHash('sha256').update(data).digest();
}

/** RFC 8785 canonical JSON text of a value. */
export function jcs(value: unknown): string {
  const text = canonicalize(value);
  if (text === undefined) throw new Error('value has no JSON encoding');
  return text;
}

export function genesisHead(chain: string): Buffer {
  return sha256(Buffer.from(`${AUDIT_FORMAT} genesis ${chain}`, 'utf8'));
}

/** SHA-256 of the canonical encoding of the event line without its "head". */
export function entryHash(line: EventLine): Buffer {
  const { head: _head, ...hashed } = line;
  return sha256(Buffer.from(jcs(hashed), 'utf8'));
}

export function nextHead(prev: Buffer, entry: Buffer): Buffer {
  return sha256(Buffer.concat([prev, entry]));
}

/** The bytes a checkpoint's signature covers. */
export function signingInput(body: CheckpointBody): Buffer {
  const { sig: _sig, ...signed } = body as CheckpointBody & { sig?: string };
  return Buffer.from(jcs(signed), 'utf8');
}

export function signCheckpoint(body: CheckpointBody, key: crypto.KeyObject): CheckpointLine {
  const sig = crypto.sign(null, signingInput(body), key).toString('base64url');
  return { ...body, sig };
}

/** The DER prefix of a PKCS #8 Ed25519 private key, followed by its 32-byte seed (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export function ed25519FromSeed(seed: Buffer): crypto.KeyObject {
  if (seed.length !== 32) throw new Error('an Ed25519 seed is 32 bytes');
  return crypto.createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
}

export function ed25519Seed(key: crypto.KeyObject): Buffer {
  const der = key.export({ format: 'der', type: 'pkcs8' });
  return Buffer.from(der.subarray(der.length - 32));
}

export function publicJwk(
  key: crypto.KeyObject,
  kid: string,
  validFrom: Date,
  validUntil: Date | null,
): AuditJwk {
  const { x } = crypto.createPublicKey(key).export({ format: 'jwk' }) as { x: string };
  return {
    kty: 'OKP',
    crv: 'Ed25519',
    x,
    kid,
    alg: 'EdDSA',
    use: 'sig',
    validFrom: validFrom.toISOString(),
    ...(validUntil ? { validUntil: validUntil.toISOString() } : {}),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Verification

export interface VerifySummary {
  chain: string;
  events: number;
  firstPos: number | null;
  lastPos: number | null;
  checkpoints: number;
  firstSeq: number | null;
  lastSeq: number | null;
  kids: string[];
  lastSealedAt: string | null;
  head: string | null;
}

export type VerifyResult =
  | { ok: true; summary: VerifySummary }
  | { ok: false; problem: string; eventId?: string; line: number; summary: VerifySummary };

class VerifyFailure extends Error {
  constructor(
    message: string,
    readonly eventId?: string,
  ) {
    super(message);
  }
}

interface PendingEvent {
  id: string;
  pos: number;
  entry: Buffer;
  head: string | undefined;
}

const HEX32 = /^[0-9a-f]{64}$/;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;
}

function checkEventShape(o: Record<string, unknown>): EventLine {
  const str = (k: string) => typeof o[k] === 'string';
  const strOrNull = (k: string) => o[k] === null || typeof o[k] === 'string';
  const actor = o.actor;
  if (
    !str('chain') ||
    !str('id') ||
    !/^\d{1,19}$/.test(o.id as string) ||
    !str('occurredAt') ||
    !str('action') ||
    !str('outcome') ||
    !isObject(actor) ||
    typeof actor.type !== 'string' ||
    !(actor.id === null || typeof actor.id === 'string') ||
    !strOrNull('subjectUserId') ||
    !strOrNull('connectionId') ||
    !strOrNull('provider') ||
    !strOrNull('requestId') ||
    !('details' in o) ||
    (o.head !== undefined && (typeof o.head !== 'string' || !HEX32.test(o.head)))
  ) {
    throw new VerifyFailure('malformed event line', typeof o.id === 'string' ? o.id : undefined);
  }
  return o as unknown as EventLine;
}

function checkCheckpointShape(o: Record<string, unknown>): CheckpointLine {
  if (
    o.format !== AUDIT_FORMAT ||
    typeof o.chain !== 'string' ||
    !isPositiveInt(o.seq) ||
    !isPositiveInt(o.firstPos) ||
    !isPositiveInt(o.lastPos) ||
    !isPositiveInt(o.count) ||
    typeof o.firstEventId !== 'string' ||
    typeof o.lastEventId !== 'string' ||
    typeof o.prevHead !== 'string' ||
    !HEX32.test(o.prevHead) ||
    typeof o.head !== 'string' ||
    !HEX32.test(o.head) ||
    typeof o.sealedAt !== 'string' ||
    !ISO.test(o.sealedAt) ||
    typeof o.kid !== 'string' ||
    typeof o.sig !== 'string'
  ) {
    throw new VerifyFailure('malformed checkpoint line');
  }
  return o as unknown as CheckpointLine;
}

/** The keys of a JWKS document that can verify checkpoints, by kid. */
export function auditKeysFrom(jwks: unknown): Map<string, { key: crypto.KeyObject; jwk: AuditJwk }> {
  const keys = new Map<string, { key: crypto.KeyObject; jwk: AuditJwk }>();
  const list = isObject(jwks) && Array.isArray(jwks.keys) ? (jwks.keys as unknown[]) : null;
  if (!list) throw new Error('not a JWKS document (no "keys" array)');
  for (const k of list) {
    if (!isObject(k) || k.kty !== 'OKP' || k.crv !== 'Ed25519' || typeof k.kid !== 'string') continue;
    if (typeof k.x !== 'string' || typeof k.validFrom !== 'string') continue;
    const key = crypto.createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: k.x },
      format: 'jwk',
    });
    keys.set(k.kid, { key, jwk: k as unknown as AuditJwk });
  }
  return keys;
}

/**
 * Verifies an export, line by line: the header, every event's encoding and position, every checkpoint's
 * signature (by a key valid when it was sealed), its place in the chain of checkpoints, and that the events
 * before it are exactly the ones it covers and hash to its head. Stops at the first problem, naming the first
 * event it concerns where there is one. Events after the last checkpoint are a failure: an export holds only
 * sealed events.
 */
export async function verifyExport(
  lines: AsyncIterable<string> | Iterable<string>,
  jwks: unknown,
): Promise<VerifyResult> {
  const keys = auditKeysFrom(jwks);
  const summary: VerifySummary = {
    chain: '',
    events: 0,
    firstPos: null,
    lastPos: null,
    checkpoints: 0,
    firstSeq: null,
    lastSeq: null,
    kids: [],
    lastSealedAt: null,
    head: null,
  };
  let lineNo = 0;
  let header: ExportHeader | null = null;
  let pending: PendingEvent[] = [];
  let lastCheckpoint: CheckpointLine | null = null;
  /** The head after the last pending event, where the head before the first is known already. */
  let running: Buffer | null = null;
  const seenIds = new Set<string>();
  const sealMismatch = (ev: { id: string; pos: number }) =>
    new VerifyFailure(
      `event ${ev.id} (position ${ev.pos}) does not match its seal: it was altered, or an event before it was removed, inserted or reordered`,
      ev.id,
    );
  try {
    for await (const raw of lines) {
      lineNo++;
      if (raw.trim() === '') continue;
      let o: unknown;
      try {
        o = JSON.parse(raw);
      } catch {
        throw new VerifyFailure('line is not JSON');
      }
      if (!isObject(o)) throw new VerifyFailure('line is not a JSON object');
      if (!header) {
        if (o.kind !== 'export' || o.format !== AUDIT_FORMAT || typeof o.chain !== 'string') {
          throw new VerifyFailure(`the first line is not a ${AUDIT_FORMAT} export header`);
        }
        header = o as unknown as ExportHeader;
        summary.chain = header.chain;
        continue;
      }
      if (o.kind === 'event') {
        const ev = checkEventShape(o);
        if (ev.chain !== header.chain) {
          throw new VerifyFailure(`event ${ev.id} belongs to chain ${ev.chain}, not ${header.chain}`, ev.id);
        }
        if (!isPositiveInt(ev.pos)) {
          throw new VerifyFailure(`event ${ev.id} was never sealed (it has no chain position)`, ev.id);
        }
        if (seenIds.has(ev.id)) throw new VerifyFailure(`event ${ev.id} appears twice`, ev.id);
        seenIds.add(ev.id);
        const prev = pending.length
          ? pending[pending.length - 1].pos
          : lastCheckpoint
            ? lastCheckpoint.lastPos
            : null;
        if (prev !== null && ev.pos !== prev + 1) {
          throw new VerifyFailure(
            ev.pos > prev + 1
              ? `position ${prev + 1} is missing: an event was removed before event ${ev.id}`
              : `event ${ev.id} is out of order (position ${ev.pos} after ${prev})`,
            ev.id,
          );
        }
        const entry = entryHash(ev);
        // After a checkpoint, or from the genesis at position 1, an event's head is checked on its own line, so
        // that the first bad event is the one named, even when a later line would fail first (a forged event
        // in a sealed event's position makes that event look out of order).
        if (!pending.length) {
          running = lastCheckpoint
            ? Buffer.from(lastCheckpoint.head, 'hex')
            : ev.pos === 1
              ? genesisHead(header.chain)
              : null;
        }
        if (running) {
          running = nextHead(running, entry);
          if (ev.head !== undefined && ev.head !== running.toString('hex')) throw sealMismatch(ev);
        }
        pending.push({ id: ev.id, pos: ev.pos, entry, head: ev.head });
        continue;
      }
      if (o.kind === 'checkpoint') {
        const cp = checkCheckpointShape(o);
        if (cp.chain !== header.chain)
          throw new VerifyFailure(`checkpoint ${cp.seq} belongs to another chain`);
        const k = keys.get(cp.kid);
        if (!k) throw new VerifyFailure(`checkpoint ${cp.seq} is signed by unknown key ${cp.kid}`);
        const sig = Buffer.from(cp.sig, 'base64url');
        if (!crypto.verify(null, signingInput(cp), k.key, sig)) {
          throw new VerifyFailure(`checkpoint ${cp.seq} has an invalid signature`, pending[0]?.id);
        }
        const sealed = Date.parse(cp.sealedAt);
        const until = k.jwk.validUntil === undefined ? Infinity : Date.parse(k.jwk.validUntil);
        // Written so that a date that does not parse (NaN: "2026-13-45T00:00:00Z", or a garbled window in the
        // JWKS) is outside every window rather than inside.
        if (!(sealed >= Date.parse(k.jwk.validFrom) && sealed <= until)) {
          throw new VerifyFailure(`checkpoint ${cp.seq} was signed outside key ${cp.kid}'s validity window`);
        }
        if (lastCheckpoint) {
          if (cp.seq !== lastCheckpoint.seq + 1) {
            throw new VerifyFailure(
              `checkpoint ${lastCheckpoint.seq + 1} is missing (found ${cp.seq} after ${lastCheckpoint.seq})`,
              pending[0]?.id,
            );
          }
          if (cp.prevHead !== lastCheckpoint.head || cp.firstPos !== lastCheckpoint.lastPos + 1) {
            throw new VerifyFailure(
              `checkpoint ${cp.seq} does not continue checkpoint ${lastCheckpoint.seq}`,
            );
          }
        } else if (
          cp.seq === 1 &&
          (cp.firstPos !== 1 || cp.prevHead !== genesisHead(cp.chain).toString('hex'))
        ) {
          throw new VerifyFailure('checkpoint 1 does not start at the chain genesis');
        } else if (cp.seq !== 1 && typeof header.from !== 'string') {
          // Only a range export (its header names where it starts) may begin after checkpoint 1.
          throw new VerifyFailure(
            `checkpoints before ${cp.seq} are missing: an export with no start ("from") begins at checkpoint 1`,
            pending[0]?.id,
          );
        }
        if (cp.count !== cp.lastPos - cp.firstPos + 1) {
          throw new VerifyFailure(`checkpoint ${cp.seq} states a count that does not match its positions`);
        }
        const first = pending[0];
        if (!first || first.pos !== cp.firstPos) {
          throw new VerifyFailure(
            `events from position ${cp.firstPos} (event ${cp.firstEventId}), covered by checkpoint ${cp.seq}, are missing`,
            first?.id ?? cp.firstEventId,
          );
        }
        let head: Buffer = Buffer.from(cp.prevHead, 'hex');
        for (const ev of pending) {
          if (ev.pos > cp.lastPos) {
            throw new VerifyFailure(
              `event ${ev.id} (position ${ev.pos}) is beyond checkpoint ${cp.seq}: it was inserted`,
              ev.id,
            );
          }
          head = nextHead(head, ev.entry);
          if (ev.head !== undefined && ev.head !== head.toString('hex')) throw sealMismatch(ev);
        }
        const last = pending[pending.length - 1];
        if (last.pos !== cp.lastPos) {
          throw new VerifyFailure(
            `events after position ${last.pos} up to ${cp.lastPos} (checkpoint ${cp.seq}) are missing: the tail was removed`,
            last.id,
          );
        }
        if (first.id !== cp.firstEventId || last.id !== cp.lastEventId) {
          throw new VerifyFailure(
            `checkpoint ${cp.seq} covers events ${cp.firstEventId}…${cp.lastEventId}, not ${first.id}…${last.id}`,
            first.id !== cp.firstEventId ? first.id : last.id,
          );
        }
        if (head.toString('hex') !== cp.head) {
          throw new VerifyFailure(
            `events ${first.id}…${last.id} do not hash to checkpoint ${cp.seq}'s head: one was altered, removed, inserted or reordered`,
            first.id,
          );
        }
        summary.events += pending.length;
        summary.firstPos ??= cp.firstPos;
        summary.lastPos = cp.lastPos;
        summary.checkpoints++;
        summary.firstSeq ??= cp.seq;
        summary.lastSeq = cp.seq;
        if (!summary.kids.includes(cp.kid)) summary.kids.push(cp.kid);
        summary.lastSealedAt = cp.sealedAt;
        summary.head = cp.head;
        pending = [];
        lastCheckpoint = cp;
        continue;
      }
      throw new VerifyFailure(`unknown line kind ${JSON.stringify(o.kind)}`);
    }
    if (!header) throw new VerifyFailure('the export is empty (no header line)');
    if (pending.length) {
      throw new VerifyFailure(`event ${pending[0].id} is not covered by any checkpoint`, pending[0].id);
    }
    return { ok: true, summary };
  } catch (err) {
    if (!(err instanceof VerifyFailure)) throw err;
    return {
      ok: false,
      problem: err.message,
      ...(err.eventId ? { eventId: err.eventId } : {}),
      line: lineNo,
      summary,
    };
  }
}

export function describeSummary(s: VerifySummary): string {
  if (s.checkpoints === 0) return `OK ${s.chain}: the export holds no sealed events`;
  const n = (count: number, what: string) => `${count} ${what}${count === 1 ? '' : 's'}`;
  return (
    `OK ${s.chain}: ${n(s.events, 'event')} (positions ${s.firstPos}–${s.lastPos}) in ` +
    `${n(s.checkpoints, 'checkpoint')} (${s.firstSeq}–${s.lastSeq}), signed by ${s.kids.join(', ')}; ` +
    `last sealed ${s.lastSealedAt}; head ${s.head}`
  );
}
