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
 *   truncation   {"kind":"truncation","format","chain","seq","cutoff","throughPos","head","removed":[{"pos","entry"}],
 *                 "nextSeq","truncatedAt","kid","sig"}, signed like a checkpoint
 *
 * Heads are lowercase hex. Positions start at 1 and are consecutive in a chain; checkpoint seq starts at 1, and
 * each checkpoint's prevHead is the previous one's head (the first one's is the genesis head).
 *
 * Retention removes a chain's oldest events and leaves a signed truncation record in their place: positions
 * 1..throughPos are gone, and so are the later positions listed in "removed" (stragglers), each with its entry
 * hash so that the heads can still be computed. The export then starts with the chain's latest truncation
 * record and continues at checkpoint nextSeq, anchored at (throughPos, head) instead of its prevHead.
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

/** A position that retention removed after `throughPos` (a straggler), with the removed event's entry hash. */
export interface RemovedEntry {
  pos: number;
  /** Lowercase hex of the removed event's entry hash. */
  entry: string;
}

/**
 * What a retention run on a chain states and signs: every position 1..throughPos was removed, and so was every
 * position in `removed`; the chain head after throughPos was `head`; the first checkpoint that covers a position
 * after throughPos is `nextSeq`.
 */
export interface TruncationBody {
  kind: 'truncation';
  format: typeof AUDIT_FORMAT;
  chain: string;
  /** This chain's truncation number, from 1 (each retention run on a chain adds one). */
  seq: number;
  /** ISO timestamp: events that occurred before it were removed. */
  cutoff: string;
  /** Integer ≥ 0: every position 1..throughPos was removed. */
  throughPos: number;
  /** Lowercase hex: the chain head after position throughPos (the genesis head when throughPos is 0). */
  head: string;
  /** Removed positions > throughPos (stragglers), strictly ascending, each with its entry hash. */
  removed: RemovedEntry[];
  /** ≥ 1: the seq of the first checkpoint that covers a position > throughPos. */
  nextSeq: number;
  /** ISO timestamp: when the record was signed. */
  truncatedAt: string;
  kid: string;
}

export interface TruncationLine extends TruncationBody {
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

/** The bytes a checkpoint's or truncation record's signature covers: its line without "sig", in JCS. */
export function signingInput(body: CheckpointBody | TruncationBody): Buffer {
  const { sig: _sig, ...signed } = body as (CheckpointBody | TruncationBody) & { sig?: string };
  return Buffer.from(jcs(signed), 'utf8');
}

export function signCheckpoint(body: CheckpointBody, key: crypto.KeyObject): CheckpointLine {
  const sig = crypto.sign(null, signingInput(body), key).toString('base64url');
  return { ...body, sig };
}

/** Signs a truncation record exactly as a checkpoint is signed. */
export function signTruncation(body: TruncationBody, key: crypto.KeyObject): TruncationLine {
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
  /** The export's truncation record, if retention removed the chain's oldest events: `removed` counts stragglers. */
  truncation: { seq: number; cutoff: string; throughPos: number; removed: number } | null;
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

function isNonNegativeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
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

function checkTruncationShape(o: Record<string, unknown>): TruncationLine {
  const removedOk = (removed: unknown[], throughPos: number) => {
    let prev = throughPos;
    for (const r of removed) {
      if (!isObject(r) || !isPositiveInt(r.pos) || r.pos <= prev) return false;
      if (typeof r.entry !== 'string' || !HEX32.test(r.entry)) return false;
      prev = r.pos;
    }
    return true;
  };
  if (
    o.format !== AUDIT_FORMAT ||
    typeof o.chain !== 'string' ||
    !isPositiveInt(o.seq) ||
    typeof o.cutoff !== 'string' ||
    !ISO.test(o.cutoff) ||
    !isNonNegativeInt(o.throughPos) ||
    typeof o.head !== 'string' ||
    !HEX32.test(o.head) ||
    !Array.isArray(o.removed) ||
    !removedOk(o.removed as unknown[], o.throughPos) ||
    !isPositiveInt(o.nextSeq) ||
    typeof o.truncatedAt !== 'string' ||
    !ISO.test(o.truncatedAt) ||
    typeof o.kid !== 'string' ||
    typeof o.sig !== 'string'
  ) {
    throw new VerifyFailure('malformed truncation line');
  }
  return o as unknown as TruncationLine;
}

type AuditKeys = Map<string, { key: crypto.KeyObject; jwk: AuditJwk }>;

/**
 * Checks a signed line (`what` names it: "checkpoint 3", "truncation record 1") against the key its kid names,
 * and that it was signed (at `signedAt`) within that key's validity window.
 */
function checkSigned(
  what: string,
  line: CheckpointLine | TruncationLine,
  signedAt: string,
  keys: AuditKeys,
  eventId?: string,
): void {
  const k = keys.get(line.kid);
  if (!k) throw new VerifyFailure(`${what} is signed by unknown key ${line.kid}`);
  const sig = Buffer.from(line.sig, 'base64url');
  if (!crypto.verify(null, signingInput(line), k.key, sig)) {
    throw new VerifyFailure(`${what} has an invalid signature`, eventId);
  }
  const signed = Date.parse(signedAt);
  const until = k.jwk.validUntil === undefined ? Infinity : Date.parse(k.jwk.validUntil);
  // Written so that a date that does not parse (NaN: "2026-13-45T00:00:00Z", or a garbled window in the
  // JWKS) is outside every window rather than inside.
  if (!(signed >= Date.parse(k.jwk.validFrom) && signed <= until)) {
    throw new VerifyFailure(`${what} was signed outside key ${line.kid}'s validity window`);
  }
}

/** The keys of a JWKS document that can verify checkpoints and truncation records, by kid. */
export function auditKeysFrom(jwks: unknown): Map<string, { key: crypto.KeyObject; jwk: AuditJwk }> {
  const keys: AuditKeys = new Map();
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
 * Verifies an export, line by line: the header, the truncation record if retention left one (its signature,
 * by a key valid when it was signed), every event's encoding and position, every checkpoint's signature (by a
 * key valid when it was sealed), its place in the chain of checkpoints, and that the events before it are
 * exactly the ones it covers and hash to its head. Positions the truncation record says were removed are
 * skipped, their entry hashes taken from the record, and the first checkpoint after the cut continues from the
 * record's head. Stops at the first problem, naming the first event it concerns where there is one. Events
 * after the last checkpoint are a failure: an export holds only sealed events.
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
    truncation: null,
  };
  let lineNo = 0;
  let header: ExportHeader | null = null;
  /** The export's truncation record, and the positions after its throughPos that it removed (entry hashes). */
  let trunc: TruncationLine | null = null;
  const stragglers = new Map<number, Buffer>();
  /** Whether an event or checkpoint line has been read: a truncation record must come before any. */
  let started = false;
  let pending: PendingEvent[] = [];
  let lastCheckpoint: CheckpointLine | null = null;
  /** The head after position `runningPos` (the last pending event), where the head before the first is known. */
  let running: Buffer | null = null;
  let runningPos = 0;
  /** Whether `running` took anything from the truncation record since an event's own head last confirmed it. */
  let runningViaTruncation = false;
  const seenIds = new Set<string>();
  const truncationSuspect = () =>
    trunc ? `, or truncation record ${trunc.seq} is wrong about the positions it removed` : '';
  const sealMismatch = (ev: { id: string; pos: number }, viaTruncation = false) =>
    new VerifyFailure(
      `event ${ev.id} (position ${ev.pos}) does not match its seal: it was altered, or an event before it was removed, inserted or reordered${viaTruncation ? truncationSuspect() : ''}`,
      ev.id,
    );
  const isRemoved = (pos: number) => trunc !== null && (pos <= trunc.throughPos || stragglers.has(pos));
  /** The first position after `pos` that retention did not remove. */
  const nextKept = (pos: number) => {
    let q = trunc && pos < trunc.throughPos ? trunc.throughPos + 1 : pos + 1;
    while (stragglers.has(q)) q++;
    return q;
  };
  /** `head` carried over the positions from `from` up to `to` (exclusive), each of them a removed straggler. */
  const overRemoved = (head: Buffer, from: number, to: number) => {
    for (let q = from; q < to; q++) {
      const entry = stragglers.get(q);
      if (!entry) throw new Error(`position ${q} is not a removed position`);
      head = nextHead(head, entry);
    }
    return head;
  };
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
      if (o.kind === 'truncation') {
        if (started) {
          throw new VerifyFailure(
            'a truncation record appears after events or checkpoints: it belongs directly after the header',
          );
        }
        if (trunc) {
          throw new VerifyFailure(
            `the export holds a second truncation record (after ${trunc.seq}): only the chain's latest belongs in it`,
          );
        }
        const t = checkTruncationShape(o);
        const what = `truncation record ${t.seq}`;
        if (t.chain !== header.chain) throw new VerifyFailure(`${what} belongs to another chain`);
        checkSigned(what, t, t.truncatedAt, keys);
        if (t.throughPos === 0 && t.head !== genesisHead(header.chain).toString('hex')) {
          throw new VerifyFailure(
            `${what} removes no leading positions, but its head is not the chain genesis`,
          );
        }
        trunc = t;
        for (const r of t.removed) stragglers.set(r.pos, Buffer.from(r.entry, 'hex'));
        summary.truncation = {
          seq: t.seq,
          cutoff: t.cutoff,
          throughPos: t.throughPos,
          removed: t.removed.length,
        };
        continue;
      }
      if (o.kind === 'event') {
        started = true;
        const ev = checkEventShape(o);
        if (ev.chain !== header.chain) {
          throw new VerifyFailure(`event ${ev.id} belongs to chain ${ev.chain}, not ${header.chain}`, ev.id);
        }
        if (!isPositiveInt(ev.pos)) {
          throw new VerifyFailure(`event ${ev.id} was never sealed (it has no chain position)`, ev.id);
        }
        if (seenIds.has(ev.id)) throw new VerifyFailure(`event ${ev.id} appears twice`, ev.id);
        seenIds.add(ev.id);
        if (trunc && isRemoved(ev.pos)) {
          throw new VerifyFailure(
            `event ${ev.id} claims position ${ev.pos}, which truncation record ${trunc.seq} says retention removed: it was inserted`,
            ev.id,
          );
        }
        const prev = pending.length
          ? pending[pending.length - 1].pos
          : lastCheckpoint
            ? lastCheckpoint.lastPos
            : null;
        if (prev !== null) {
          const expected = nextKept(prev);
          if (ev.pos !== expected) {
            throw new VerifyFailure(
              ev.pos > expected
                ? `position ${expected} is missing: an event was removed before event ${ev.id}`
                : `event ${ev.id} is out of order (position ${ev.pos} after ${prev})`,
              ev.id,
            );
          }
        }
        const entry = entryHash(ev);
        // After a checkpoint, from the genesis at position 1, or from a truncation record's head at the first
        // position it kept, an event's head is checked on its own line, so that the first bad event is the one
        // named, even when a later line would fail first (a forged event in a sealed event's position makes
        // that event look out of order).
        if (!pending.length) {
          const [basePos, baseHead, viaTruncation]: [number, Buffer, boolean] = lastCheckpoint
            ? [lastCheckpoint.lastPos, Buffer.from(lastCheckpoint.head, 'hex'), false]
            : trunc
              ? [trunc.throughPos, Buffer.from(trunc.head, 'hex'), true]
              : [0, genesisHead(header.chain), false];
          running = ev.pos === nextKept(basePos) ? baseHead : null;
          runningPos = basePos;
          runningViaTruncation = viaTruncation;
        }
        if (running) {
          if (ev.pos > runningPos + 1) runningViaTruncation = true;
          running = nextHead(overRemoved(running, runningPos + 1, ev.pos), entry);
          runningPos = ev.pos;
          if (ev.head !== undefined) {
            if (ev.head !== running.toString('hex')) throw sealMismatch(ev, runningViaTruncation);
            runningViaTruncation = false;
          }
        }
        pending.push({ id: ev.id, pos: ev.pos, entry, head: ev.head });
        continue;
      }
      if (o.kind === 'checkpoint') {
        started = true;
        const cp = checkCheckpointShape(o);
        if (cp.chain !== header.chain)
          throw new VerifyFailure(`checkpoint ${cp.seq} belongs to another chain`);
        checkSigned(`checkpoint ${cp.seq}`, cp, cp.sealedAt, keys, pending[0]?.id);
        /** Where the chain is known before this checkpoint's first retained position, if not at its prevHead. */
        let anchor: { pos: number; head: string } | null = null;
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
        } else if (trunc) {
          const what = `truncation record ${trunc.seq}`;
          if (cp.seq < trunc.nextSeq) {
            throw new VerifyFailure(
              `checkpoint ${cp.seq} comes before checkpoint ${trunc.nextSeq}, the first that ${what} keeps: its events were removed by retention`,
              pending[0]?.id,
            );
          }
          if (cp.lastPos <= trunc.throughPos) {
            throw new VerifyFailure(
              `checkpoint ${cp.seq} covers only positions that ${what} removed (1–${trunc.throughPos})`,
              pending[0]?.id,
            );
          }
          if (cp.seq === trunc.nextSeq) {
            // The checkpoint may straddle the cut (its events up to throughPos are gone) or start right after it.
            if (
              cp.firstPos > trunc.throughPos + 1 ||
              (cp.firstPos === trunc.throughPos + 1 && cp.prevHead !== trunc.head)
            ) {
              throw new VerifyFailure(`checkpoint ${cp.seq} does not continue ${what}`);
            }
            anchor = { pos: trunc.throughPos, head: trunc.head };
          } else if (typeof header.from !== 'string') {
            throw new VerifyFailure(
              `${
                cp.seq - 1 === trunc.nextSeq
                  ? `checkpoint ${trunc.nextSeq} is`
                  : `checkpoints ${trunc.nextSeq}–${cp.seq - 1} are`
              } missing: an export with no start ("from") begins at checkpoint ${trunc.nextSeq}, the first that ${what} keeps`,
              pending[0]?.id,
            );
          } else if (cp.firstPos <= trunc.throughPos) {
            throw new VerifyFailure(
              `checkpoint ${cp.seq} starts at position ${cp.firstPos}, which ${what} removed, though only checkpoint ${trunc.nextSeq} may straddle the cut`,
            );
          }
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
        // Walk the checkpoint's positions from its start: each one either removed by retention (its entry hash
        // from the truncation record) or the next pending event.
        const start = anchor ? anchor.pos + 1 : cp.firstPos;
        let head: Buffer = Buffer.from(anchor ? anchor.head : cp.prevHead, 'hex');
        let pos = start;
        let usedTruncation = anchor !== null;
        let unconfirmed = usedTruncation;
        const skipRemoved = () => {
          while (pos <= cp.lastPos) {
            const entry = stragglers.get(pos);
            if (!entry) break;
            head = nextHead(head, entry);
            usedTruncation = unconfirmed = true;
            pos++;
          }
        };
        const first = pending[0] as PendingEvent | undefined;
        skipRemoved();
        if (pos <= cp.lastPos && first?.pos !== pos) {
          throw new VerifyFailure(
            `events from position ${pos}${pos === cp.firstPos ? ` (event ${cp.firstEventId})` : ''}, covered by checkpoint ${cp.seq}, are missing`,
            first?.id ?? (pos === cp.firstPos ? cp.firstEventId : undefined),
          );
        }
        if (pos > cp.lastPos && first && first.pos < start) {
          throw new VerifyFailure(
            `event ${first.id} (position ${first.pos}) comes before checkpoint ${cp.seq}, whose positions were all removed by retention`,
            first.id,
          );
        }
        for (const ev of pending) {
          if (ev.pos > cp.lastPos) {
            throw new VerifyFailure(
              `event ${ev.id} (position ${ev.pos}) is beyond checkpoint ${cp.seq}: it was inserted`,
              ev.id,
            );
          }
          skipRemoved();
          if (ev.pos !== pos) {
            throw new VerifyFailure(
              `position ${pos} is missing: an event was removed before event ${ev.id}`,
              ev.id,
            );
          }
          head = nextHead(head, ev.entry);
          pos++;
          if (ev.head !== undefined) {
            if (ev.head !== head.toString('hex')) throw sealMismatch(ev, unconfirmed);
            unconfirmed = false;
          }
        }
        skipRemoved();
        const last = pending[pending.length - 1] as PendingEvent | undefined;
        if (pos <= cp.lastPos) {
          // `last` exists: with no pending event, the check on the first position has failed already.
          throw new VerifyFailure(
            `events after position ${last?.pos} up to ${cp.lastPos} (checkpoint ${cp.seq}) are missing: the tail was removed`,
            last?.id,
          );
        }
        // The first and last events it names are checked where they are not removed.
        const firstNamed = first && !isRemoved(cp.firstPos) ? first : null;
        const lastNamed = last && !isRemoved(cp.lastPos) ? last : null;
        if (
          (firstNamed && firstNamed.id !== cp.firstEventId) ||
          (lastNamed && lastNamed.id !== cp.lastEventId)
        ) {
          throw new VerifyFailure(
            `checkpoint ${cp.seq} covers events ${cp.firstEventId}…${cp.lastEventId}, not ${first?.id}…${last?.id}`,
            firstNamed && firstNamed.id !== cp.firstEventId ? firstNamed.id : lastNamed?.id,
          );
        }
        if (head.toString('hex') !== cp.head) {
          throw first && last
            ? new VerifyFailure(
                `events ${first.id}…${last.id} do not hash to checkpoint ${cp.seq}'s head: one was altered, removed, inserted or reordered${usedTruncation ? truncationSuspect() : ''}`,
                first.id,
              )
            : new VerifyFailure(
                `positions ${start}–${cp.lastPos}, all removed by retention, do not hash to checkpoint ${cp.seq}'s head: truncation record ${trunc?.seq} is wrong about them`,
              );
        }
        summary.events += pending.length;
        summary.firstPos ??= start;
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

/** "positions 1–8 and 2 later": what a truncation record removed. */
function removedPositions(t: NonNullable<VerifySummary['truncation']>): string {
  if (t.throughPos === 0) return `${t.removed} position${t.removed === 1 ? '' : 's'}`;
  return `positions 1–${t.throughPos}${t.removed ? ` and ${t.removed} later` : ''}`;
}

export function describeSummary(s: VerifySummary): string {
  const t = s.truncation;
  const retention = t ? `events before ${t.cutoff} removed by retention (${removedPositions(t)})` : '';
  if (s.checkpoints === 0) {
    return t
      ? `OK ${s.chain}: the export holds only a truncation record: ${retention}, and no event sealed since`
      : `OK ${s.chain}: the export holds no sealed events`;
  }
  const n = (count: number, what: string) => `${count} ${what}${count === 1 ? '' : 's'}`;
  return (
    `OK ${s.chain}: ${n(s.events, 'event')} (positions ${s.firstPos}–${s.lastPos}) in ` +
    `${n(s.checkpoints, 'checkpoint')} (${s.firstSeq}–${s.lastSeq}), signed by ${s.kids.join(', ')}; ` +
    `last sealed ${s.lastSealedAt}; head ${s.head}` +
    (t ? `; ${retention}` : '')
  );
}
