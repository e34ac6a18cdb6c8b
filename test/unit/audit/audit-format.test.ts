/**
 * The sealed audit format (custos-audit/1): an honest export verifies, and every way of tampering with one
 * that the format can detect is detected, naming the first event it concerns where there is one. Exports are
 * built with the module's own functions and keys generated at run time; the worked example in
 * docs/audit-format.md is checked against what the code computes.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  AUDIT_FORMAT,
  auditKeysFrom,
  describeSummary,
  entryHash,
  genesisHead,
  jcs,
  nextHead,
  publicJwk,
  signCheckpoint,
  signingInput,
  signTruncation,
  verifyExport,
  type AuditJwk,
  type CheckpointBody,
  type CheckpointLine,
  type EventLine,
  type ExportHeader,
  type TruncationBody,
  type TruncationLine,
  type VerifyResult,
} from '../../../src/audit/audit-format.js';

type Line = ExportHeader | EventLine | CheckpointLine | TruncationLine;

interface Signer {
  kid: string;
  key: crypto.KeyObject;
  jwk: AuditJwk;
}

interface Segment {
  events: EventLine[];
  checkpoint: CheckpointLine;
}

interface SealedChain {
  chain: string;
  segments: Segment[];
}

const KEY_FROM = new Date('2026-01-01T00:00:00Z');

function aSigner(
  kid = `key-${crypto.randomUUID()}`,
  validFrom = KEY_FROM,
  validUntil: Date | null = null,
): Signer {
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  return { kid, key: privateKey, jwk: publicJwk(privateKey, kid, validFrom, validUntil) };
}

const jwksOf = (...signers: Signer[]) => ({ keys: signers.map((s) => s.jwk) });
const aChainId = () => `tenant:${crypto.randomUUID()}`;

/** The event at `pos`, as the sealer would hash it (no head yet). Ids are increasing but not consecutive. */
function anEvent(chain: string, pos: number): EventLine {
  const micros = String(pos * 1234).padStart(6, '0');
  return {
    kind: 'event',
    chain,
    pos,
    id: String(1000 + pos * 7),
    occurredAt: `2026-02-01T00:00:${String(pos % 60).padStart(2, '0')}.${micros}Z`,
    action: pos % 2 ? 'token.exchange' : 'connection.created',
    outcome: 'allowed',
    actor: { type: 'connector', id: `conn-${pos % 3}` },
    subjectUserId: `user-${pos % 4}`,
    connectionId: pos % 5 ? crypto.randomUUID() : null,
    provider: 'github',
    requestId: `req-${pos}`,
    details: {
      scopes: ['repo', 'read:user'],
      ratio: pos / 3,
      note: 'café ☕',
      nested: { z: 1, a: [true, null] },
    },
  };
}

/**
 * A chain of `events` events sealed by `checkpoints` checkpoints (as evenly as they divide), every event
 * carrying its head and every checkpoint signed by `signer`, sealed at `sealedAt(seq)`.
 */
function aSealedChain(options: {
  signer: Signer;
  events?: number;
  checkpoints?: number;
  chain?: string;
  sealedAt?: (seq: number) => string;
}): SealedChain {
  const { signer, events = 12, checkpoints = 3, chain = aChainId() } = options;
  const sealedAt =
    options.sealedAt ?? ((seq: number) => new Date(Date.UTC(2026, 1, 2, 0, seq)).toISOString());
  let head = genesisHead(chain);
  let pos = 0;
  const segments: Segment[] = [];
  for (let seq = 1; seq <= checkpoints; seq++) {
    const size = Math.floor(events / checkpoints) + (seq <= events % checkpoints ? 1 : 0);
    const prevHead = head.toString('hex');
    const sealed: EventLine[] = [];
    for (let i = 0; i < size; i++) {
      const ev = anEvent(chain, ++pos);
      head = nextHead(head, entryHash(ev));
      sealed.push({ ...ev, head: head.toString('hex') });
    }
    const body: CheckpointBody = {
      kind: 'checkpoint',
      format: AUDIT_FORMAT,
      chain,
      seq,
      firstPos: sealed[0].pos,
      lastPos: sealed[sealed.length - 1].pos,
      count: size,
      firstEventId: sealed[0].id,
      lastEventId: sealed[sealed.length - 1].id,
      prevHead,
      head: head.toString('hex'),
      sealedAt: sealedAt(seq),
      kid: signer.kid,
    };
    segments.push({ events: sealed, checkpoint: signCheckpoint(body, signer.key) });
  }
  return { chain, segments };
}

/** The export's lines: the whole chain, or (a range export) from checkpoint `fromSeq` on. */
function exportOf(c: SealedChain, fromSeq = 1): Line[] {
  const header: ExportHeader = {
    kind: 'export',
    format: AUDIT_FORMAT,
    chain: c.chain,
    from: fromSeq > 1 ? '2026-02-02T00:00:00.000Z' : null,
    to: null,
    exportedAt: '2026-03-01T00:00:00.000Z',
  };
  const lines: Line[] = [header];
  for (const s of c.segments.slice(fromSeq - 1))
    lines.push(...structuredClone(s.events), structuredClone(s.checkpoint));
  return lines;
}

function verify(lines: (Line | string)[], jwks: unknown): Promise<VerifyResult> {
  return verifyExport(
    lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))),
    jwks,
  );
}

const eventAt = (lines: Line[], pos: number) => lines.findIndex((l) => l.kind === 'event' && l.pos === pos);
const checkpointAt = (lines: Line[], seq: number) =>
  lines.findIndex((l) => l.kind === 'checkpoint' && l.seq === seq);
const event = (lines: Line[], pos: number) => lines[eventAt(lines, pos)] as EventLine;
const checkpoint = (lines: Line[], seq: number) => lines[checkpointAt(lines, seq)] as CheckpointLine;
const idOf = (pos: number) => String(1000 + pos * 7);

function resign(cp: CheckpointLine, signer: Signer, changes: Partial<CheckpointBody> = {}): CheckpointLine {
  const { sig: _sig, ...body } = cp;
  return signCheckpoint({ ...body, kid: signer.kid, ...changes }, signer.key);
}

function expectFailure(result: VerifyResult, problem: RegExp, eventId?: string): void {
  if (result.ok) throw new Error(`expected a failure matching ${problem}, but the export verified`);
  expect(result.problem).toMatch(problem);
  expect(result.eventId).toBe(eventId);
}

// Twelve events in three checkpoints: positions 1–4 (seq 1), 5–8 (seq 2), 9–12 (seq 3).
const signer = aSigner();
const jwks = jwksOf(signer);
const sealed = aSealedChain({ signer });

describe('verifyExport of an honest export', () => {
  it('accepts it and summarises what it proved', async () => {
    const result = await verify(exportOf(sealed), jwks);
    expect(result).toEqual({
      ok: true,
      summary: {
        chain: sealed.chain,
        events: 12,
        firstPos: 1,
        lastPos: 12,
        checkpoints: 3,
        firstSeq: 1,
        lastSeq: 3,
        kids: [signer.kid],
        lastSealedAt: sealed.segments[2].checkpoint.sealedAt,
        head: sealed.segments[2].checkpoint.head,
        truncation: null,
      },
    });
    expect(describeSummary(result.summary)).toBe(
      `OK ${sealed.chain}: 12 events (positions 1–12) in 3 checkpoints (1–3), signed by ${signer.kid}; ` +
        `last sealed ${sealed.segments[2].checkpoint.sealedAt}; head ${sealed.segments[2].checkpoint.head}`,
    );
  });

  it('accepts it from an async iterable (a file read line by line), with blank lines', async () => {
    async function* lines() {
      for (const l of exportOf(sealed)) {
        yield JSON.stringify(l);
        yield '';
      }
    }
    await expect(verifyExport(lines(), jwks)).resolves.toMatchObject({ ok: true, summary: { events: 12 } });
  });

  it('accepts events without their head: it is a locator, the checkpoint proves them', async () => {
    const lines = exportOf(sealed).map((l) => {
      if (l.kind !== 'event') return l;
      const { head: _head, ...rest } = l;
      return rest;
    });
    await expect(verify(lines, jwks)).resolves.toMatchObject({ ok: true, summary: { events: 12 } });
  });

  it('accepts an export that holds no sealed events yet', async () => {
    const result = await verify([exportOf(sealed)[0]], jwks);
    expect(result.ok).toBe(true);
    expect(describeSummary(result.summary)).toBe(`OK ${sealed.chain}: the export holds no sealed events`);
  });

  it('accepts a range export that starts at a later checkpoint, trusting its signed prevHead', async () => {
    const result = await verify(exportOf(sealed, 2), jwks);
    expect(result).toMatchObject({
      ok: true,
      summary: { events: 8, firstPos: 5, lastPos: 12, checkpoints: 2, firstSeq: 2, lastSeq: 3 },
    });
  });

  it('accepts checkpoints signed by successive keys, each within its window', async () => {
    const rotatedAt = new Date('2026-02-02T00:02:30Z');
    const old = aSigner('old', KEY_FROM, rotatedAt);
    const next = aSigner('next', rotatedAt, null);
    const c = aSealedChain({ signer: old, checkpoints: 3 });
    const cp3 = c.segments[2].checkpoint;
    c.segments[2].checkpoint = resign(cp3, next);
    const result = await verify(exportOf(c), jwksOf(old, next));
    expect(result).toMatchObject({ ok: true, summary: { kids: ['old', 'next'] } });
  });

  it('cannot tell an export whose newest checkpoints were cut off, with their events: its summary shows the older head to compare', async () => {
    const lines = exportOf(sealed).slice(0, checkpointAt(exportOf(sealed), 2) + 1);
    const result = await verify(lines, jwks);
    expect(result).toMatchObject({
      ok: true,
      summary: { lastSeq: 2, lastPos: 8, head: sealed.segments[1].checkpoint.head },
    });
    expect(describeSummary(result.summary)).toContain(`head ${sealed.segments[1].checkpoint.head}`);
    expect(describeSummary(result.summary)).toContain(
      `last sealed ${sealed.segments[1].checkpoint.sealedAt}`,
    );
  });
});

describe('verifyExport of a tampered export', () => {
  describe.each([
    ['details', (e: EventLine) => ({ ...e, details: { scopes: ['repo', 'admin:org'] } })],
    ['action', (e: EventLine) => ({ ...e, action: 'connection.revoked' })],
    ['occurredAt', (e: EventLine) => ({ ...e, occurredAt: '2026-02-01T00:00:06.000000Z' })],
    ['outcome', (e: EventLine) => ({ ...e, outcome: 'denied' })],
    ['actor', (e: EventLine) => ({ ...e, actor: { type: 'admin_key', id: 'someone-else' } })],
  ])("with an event's %s edited", (_field, edit) => {
    it('names that event', async () => {
      const lines = exportOf(sealed);
      lines[eventAt(lines, 6)] = edit(event(lines, 6));
      expectFailure(await verify(lines, jwks), /does not match its seal/, idOf(6));
    });

    it('names the first event of its checkpoint when the events carry no head', async () => {
      const lines = exportOf(sealed).map((l): Line => (l.kind === 'event' ? { ...l, head: undefined } : l));
      lines[eventAt(lines, 6)] = edit(event(lines, 6));
      expectFailure(await verify(lines, jwks), /do not hash to checkpoint 2's head/, idOf(5));
    });
  });

  it('detects an edit whose head was recomputed to match, at the event after it', async () => {
    const lines = exportOf(sealed);
    const edited = { ...event(lines, 6), action: 'connection.revoked' };
    edited.head = nextHead(Buffer.from(event(lines, 5).head!, 'hex'), entryHash(edited)).toString('hex');
    lines[eventAt(lines, 6)] = edited;
    expectFailure(await verify(lines, jwks), /does not match its seal/, idOf(7));
  });

  it('names the event after a line removed from the middle of a checkpoint', async () => {
    const lines = exportOf(sealed);
    lines.splice(eventAt(lines, 6), 1);
    expectFailure(await verify(lines, jwks), /position 6 is missing/, idOf(7));
  });

  it('detects the last event of a checkpoint removed, naming the event before it', async () => {
    const lines = exportOf(sealed);
    lines.splice(eventAt(lines, 8), 1);
    expectFailure(
      await verify(lines, jwks),
      /after position 7 up to 8 \(checkpoint 2\) are missing/,
      idOf(7),
    );
  });

  it("detects the last checkpoint's events removed while the checkpoint stays, naming the first of them", async () => {
    const lines = exportOf(sealed);
    lines.splice(eventAt(lines, 9), 4);
    expectFailure(await verify(lines, jwks), /events from position 9 .* are missing/, idOf(9));
  });

  it('names a forged event without a position: the database holds it but it was never sealed', async () => {
    const lines = exportOf(sealed);
    const { pos: _pos, head: _head, ...forged } = { ...anEvent(sealed.chain, 6), id: '99999' };
    lines.splice(eventAt(lines, 6), 0, forged as EventLine);
    expectFailure(await verify(lines, jwks), /event 99999 was never sealed/, '99999');
  });

  it('names a forged event that claims an existing position and copies its head', async () => {
    const lines = exportOf(sealed);
    const forged = { ...event(lines, 6), id: '99999', action: 'connection.revoked' };
    lines.splice(eventAt(lines, 6), 0, forged);
    expectFailure(await verify(lines, jwks), /event 99999 \(position 6\) does not match its seal/, '99999');
  });

  it('names a forged event given the next position, with the events after it renumbered', async () => {
    const lines = exportOf(sealed);
    const at = eventAt(lines, 6);
    for (const l of lines.slice(at)) if (l.kind === 'event') l.pos++;
    const forged: EventLine = {
      ...anEvent(sealed.chain, 6),
      id: '99999',
      head: crypto.randomBytes(32).toString('hex'),
    };
    lines.splice(at, 0, forged);
    expectFailure(await verify(lines, jwks), /does not match its seal/, '99999');
  });

  it("names a forged event appended to a checkpoint's range", async () => {
    const lines = exportOf(sealed);
    const forged: EventLine = { ...anEvent(sealed.chain, 9), id: '99999' };
    lines.splice(checkpointAt(lines, 2), 0, forged);
    expectFailure(
      await verify(lines, jwks),
      /event 99999 \(position 9\) is beyond checkpoint 2: it was inserted/,
      '99999',
    );
  });

  it('names the first of two events swapped', async () => {
    const lines = exportOf(sealed);
    const [a, b] = [eventAt(lines, 6), eventAt(lines, 7)];
    [lines[a], lines[b]] = [lines[b], lines[a]];
    expectFailure(await verify(lines, jwks), /position 6 is missing/, idOf(7));
  });

  it('names the first of two events swapped with their positions swapped back', async () => {
    const lines = exportOf(sealed);
    const [a, b] = [eventAt(lines, 6), eventAt(lines, 7)];
    [lines[a], lines[b]] = [
      { ...(lines[b] as EventLine), pos: 6 },
      { ...(lines[a] as EventLine), pos: 7 },
    ];
    expectFailure(await verify(lines, jwks), /does not match its seal/, idOf(7));
  });

  it('names an event that appears twice', async () => {
    const lines = exportOf(sealed);
    lines.splice(eventAt(lines, 7), 0, structuredClone(event(lines, 6)));
    expectFailure(await verify(lines, jwks), /event \d+ appears twice/, idOf(6));
  });

  it('names an event from another chain', async () => {
    const other = aSealedChain({ signer });
    const lines = exportOf(sealed);
    // Event ids come from one sequence for all chains, so another chain's event has an id of its own.
    lines[eventAt(lines, 6)] = { ...structuredClone(other.segments[1].events[1]), id: '88888' };
    expectFailure(await verify(lines, jwks), /event 88888 belongs to chain tenant:.*, not tenant:/, '88888');
  });

  it('refuses events after the last checkpoint: an export holds only sealed events', async () => {
    const lines = exportOf(sealed);
    const after = anEvent(sealed.chain, 13);
    const head = nextHead(Buffer.from(checkpoint(lines, 3).head, 'hex'), entryHash(after));
    lines.push({ ...after, head: head.toString('hex') });
    expectFailure(await verify(lines, jwks), /event \d+ is not covered by any checkpoint/, idOf(13));
  });

  it('refuses a checkpoint re-signed by a key the JWKS does not hold', async () => {
    const lines = exportOf(sealed);
    lines[checkpointAt(lines, 2)] = resign(checkpoint(lines, 2), aSigner());
    expectFailure(await verify(lines, jwks), /checkpoint 2 is signed by unknown key/);
  });

  it('refuses a checkpoint re-signed by another key under the published kid', async () => {
    const lines = exportOf(sealed);
    lines[checkpointAt(lines, 2)] = resign(checkpoint(lines, 2), aSigner(signer.kid));
    expectFailure(await verify(lines, jwks), /checkpoint 2 has an invalid signature/, idOf(5));
  });

  it.each([
    ['head', { head: 'ab'.repeat(32) }],
    ['sealedAt', { sealedAt: '2026-02-02T00:00:00.000Z' }],
    ['lastEventId', { lastEventId: '12345' }],
  ])('refuses a checkpoint whose %s was edited under its old signature', async (_f, change) => {
    const lines = exportOf(sealed);
    lines[checkpointAt(lines, 2)] = { ...checkpoint(lines, 2), ...change };
    expectFailure(await verify(lines, jwks), /checkpoint 2 has an invalid signature/, idOf(5));
  });

  it('refuses a checkpoint missing from the middle together with its events', async () => {
    const lines = exportOf(sealed);
    lines.splice(eventAt(lines, 5), 5);
    expectFailure(await verify(lines, jwks), /position 5 is missing/, idOf(9));
  });

  it('refuses a checkpoint missing from the middle while its events stay (a seq gap)', async () => {
    const lines = exportOf(sealed);
    lines.splice(checkpointAt(lines, 2), 1);
    expectFailure(await verify(lines, jwks), /checkpoint 2 is missing \(found 3 after 1\)/, idOf(5));
  });

  it('refuses a checkpoint that does not continue the previous one', async () => {
    const lines = exportOf(sealed);
    lines[checkpointAt(lines, 2)] = resign(checkpoint(lines, 2), signer, { prevHead: 'cd'.repeat(32) });
    expectFailure(await verify(lines, jwks), /checkpoint 2 does not continue checkpoint 1/);
  });

  it('refuses a checkpoint whose count does not match its positions', async () => {
    const lines = exportOf(sealed);
    lines[checkpointAt(lines, 2)] = resign(checkpoint(lines, 2), signer, { count: 5 });
    expectFailure(await verify(lines, jwks), /count that does not match/);
  });

  it('refuses a checkpoint that names other first and last events', async () => {
    const lines = exportOf(sealed);
    lines[checkpointAt(lines, 2)] = resign(checkpoint(lines, 2), signer, { firstEventId: '4242' });
    expectFailure(await verify(lines, jwks), /covers events 4242…/, idOf(5));
  });

  describe("a checkpoint signed outside its key's validity window", () => {
    it('refuses one sealed after the key was retired', async () => {
      const retired = aSigner('retired', KEY_FROM, new Date('2026-02-02T00:01:30Z'));
      const c = aSealedChain({ signer: retired });
      expectFailure(
        await verify(exportOf(c), jwksOf(retired)),
        /checkpoint 2 was signed outside key retired's validity window/,
      );
    });

    it('refuses one sealed before the key was valid', async () => {
      const early = aSigner('early', new Date('2026-02-02T00:01:30Z'));
      const c = aSealedChain({ signer: early });
      expectFailure(
        await verify(exportOf(c), jwksOf(early)),
        /checkpoint 1 was signed outside key early's validity window/,
      );
    });

    it('refuses one whose sealedAt is no real date, which no window can contain', async () => {
      const retired = aSigner('retired', KEY_FROM, new Date('2026-02-02T00:00:00Z'));
      const c = aSealedChain({ signer: retired, checkpoints: 1, sealedAt: () => '2026-13-45T00:00:00Z' });
      expectFailure(await verify(exportOf(c), jwksOf(retired)), /outside key retired's validity window/);
    });

    it('refuses one whose key has a window that is no date', async () => {
      const garbled = aSigner('garbled');
      const c = aSealedChain({ signer: garbled, checkpoints: 1 });
      for (const bad of [{ validUntil: 'soon' }, { validFrom: 'yesterday' }]) {
        const result = await verify(exportOf(c), { keys: [{ ...garbled.jwk, ...bad }] });
        expectFailure(result, /outside key garbled's validity window/);
      }
    });
  });

  describe('the chain genesis', () => {
    it("refuses checkpoint 1 whose prevHead is not the chain's genesis head", async () => {
      const lines = exportOf(sealed);
      lines[checkpointAt(lines, 1)] = resign(checkpoint(lines, 1), signer, {
        prevHead: genesisHead('platform').toString('hex'),
      });
      expectFailure(await verify(lines, jwks), /checkpoint 1 does not start at the chain genesis/);
    });

    it('refuses checkpoint 1 that does not start at position 1', async () => {
      const lines = exportOf(sealed);
      lines.splice(eventAt(lines, 1), 1);
      lines[checkpointAt(lines, 1)] = resign(checkpoint(lines, 1), signer, { firstPos: 2, count: 3 });
      expectFailure(await verify(lines, jwks), /checkpoint 1 does not start at the chain genesis/);
    });

    it('refuses an export without a start (header from null) whose first checkpoint is not 1', async () => {
      const lines = exportOf(sealed, 2);
      lines[0] = { ...(lines[0] as ExportHeader), from: null };
      expectFailure(await verify(lines, jwks), /checkpoints before 2 are missing/, idOf(5));
    });
  });

  describe('lines that are not the format', () => {
    it('refuses an unknown line kind, giving its line number', async () => {
      const lines: (Line | string)[] = exportOf(sealed);
      lines.splice(3, 0, JSON.stringify({ kind: 'note', text: 'nothing to see' }));
      const result = await verify(lines, jwks);
      expectFailure(result, /unknown line kind "note"/);
      expect(result).toMatchObject({ line: 4 });
    });

    it.each([
      ['malformed JSON', '{"kind":"event",', /line is not JSON/],
      ['a JSON value that is not an object', '[1,2,3]', /not a JSON object/],
    ])('refuses %s, giving its line number', async (_what, text, problem) => {
      const lines: (Line | string)[] = exportOf(sealed);
      lines.splice(5, 0, text);
      const result = await verify(lines, jwks);
      expectFailure(result, problem);
      expect(result).toMatchObject({ line: 6 });
    });

    it('refuses an event line that misses a member', async () => {
      const lines = exportOf(sealed);
      const { requestId: _r, ...partial } = event(lines, 3);
      lines[eventAt(lines, 3)] = partial as EventLine;
      expectFailure(await verify(lines, jwks), /malformed event line/, idOf(3));
    });

    it('refuses a checkpoint line that misses a member', async () => {
      const lines = exportOf(sealed);
      const { sealedAt: _s, ...partial } = checkpoint(lines, 1);
      lines[checkpointAt(lines, 1)] = partial as CheckpointLine;
      expectFailure(await verify(lines, jwks), /malformed checkpoint line/);
    });

    it('refuses an export whose first line is not the header, and an empty one', async () => {
      expectFailure(
        await verify(exportOf(sealed).slice(1), jwks),
        /first line is not a custos-audit\/1 export header/,
      );
      expectFailure(await verify([], jwks), /the export is empty/);
    });

    it('refuses a JWKS document without keys', () => {
      expect(() => auditKeysFrom({ nothing: [] })).toThrow(/not a JWKS document/);
    });
  });
});

// ---------------------------------------------------------------------------------------------------------
// Retention: truncation records

const CUTOFF = '2026-02-01T00:00:07.000000Z';
const TRUNCATED_AT = '2026-02-03T00:00:00.000Z';

/** Every event of a sealed chain by position, with its head. */
const eventsOf = (c: SealedChain) => new Map(c.segments.flatMap((s) => s.events).map((e) => [e.pos, e]));

function resignTruncation(
  t: TruncationLine,
  by: Signer,
  changes: Partial<TruncationBody> = {},
): TruncationLine {
  const { sig: _sig, ...body } = t;
  return signTruncation({ ...body, kid: by.kid, ...changes }, by.key);
}

/**
 * The truncation record a retention run writes when it removes positions 1..throughPos of the chain and the
 * later positions `stragglers` (events that occurred before the cutoff but were sealed after one that did not).
 */
function aTruncation(
  c: SealedChain,
  options: { throughPos: number; stragglers?: number[]; by?: Signer; seq?: number; truncatedAt?: string },
): TruncationLine {
  const { throughPos, stragglers = [], by = signer, seq = 1, truncatedAt = TRUNCATED_AT } = options;
  const events = eventsOf(c);
  const next = c.segments.find((s) => s.checkpoint.lastPos > throughPos);
  return signTruncation(
    {
      kind: 'truncation',
      format: AUDIT_FORMAT,
      chain: c.chain,
      seq,
      cutoff: CUTOFF,
      throughPos,
      head: throughPos === 0 ? genesisHead(c.chain).toString('hex') : events.get(throughPos)!.head!,
      removed: stragglers.map((pos) => ({ pos, entry: entryHash(events.get(pos)!).toString('hex') })),
      // After the last checkpoint when everything sealed was removed: the next one to be sealed.
      nextSeq: next ? next.checkpoint.seq : c.segments.length + 1,
      truncatedAt,
      kid: by.kid,
    },
    by.key,
  );
}

/** The export a retention run leaves: the header, the truncation record, then what it kept (from `fromSeq`). */
function truncatedExportOf(c: SealedChain, t: TruncationLine, fromSeq = t.nextSeq): Line[] {
  const removed = new Set(t.removed.map((r) => r.pos));
  const lines: Line[] = [
    {
      kind: 'export',
      format: AUDIT_FORMAT,
      chain: c.chain,
      from: fromSeq !== t.nextSeq ? '2026-02-02T00:00:00.000Z' : null,
      to: null,
      exportedAt: '2026-03-01T00:00:00.000Z',
    },
    structuredClone(t),
  ];
  for (const s of c.segments.filter((s) => s.checkpoint.seq >= fromSeq)) {
    const kept = s.events.filter((e) => e.pos > t.throughPos && !removed.has(e.pos));
    lines.push(...structuredClone(kept), structuredClone(s.checkpoint));
  }
  return lines;
}

const truncationAt = (lines: Line[]) => lines.findIndex((l) => l.kind === 'truncation');
const truncation = (lines: Line[]) => lines[truncationAt(lines)] as TruncationLine;

describe('verifyExport of an export after retention', () => {
  // Sixteen events in four checkpoints: positions 1–4 (seq 1), 5–8 (seq 2), 9–12 (seq 3), 13–16 (seq 4).
  // Retention removes 1–6, which cuts checkpoint 2, and three stragglers: 10 inside checkpoint 3, and 13 and
  // 16, the first and last positions of checkpoint 4. Kept: 7, 8 | 9, 11, 12 | 14, 15.
  const long = aSealedChain({ signer, events: 16, checkpoints: 4 });
  const cut = aTruncation(long, { throughPos: 6, stragglers: [10, 13, 16] });

  describe('an honest one', () => {
    it('verifies, from the truncation record’s head, and its summary says what retention removed', async () => {
      expect(cut.nextSeq).toBe(2);
      const result = await verify(truncatedExportOf(long, cut), jwks);
      expect(result).toEqual({
        ok: true,
        summary: {
          chain: long.chain,
          events: 7,
          firstPos: 7,
          lastPos: 16,
          checkpoints: 3,
          firstSeq: 2,
          lastSeq: 4,
          kids: [signer.kid],
          lastSealedAt: long.segments[3].checkpoint.sealedAt,
          head: long.segments[3].checkpoint.head,
          truncation: { seq: 1, cutoff: CUTOFF, throughPos: 6, removed: 3 },
        },
      });
      expect(describeSummary(result.summary)).toBe(
        `OK ${long.chain}: 7 events (positions 7–16) in 3 checkpoints (2–4), signed by ${signer.kid}; ` +
          `last sealed ${long.segments[3].checkpoint.sealedAt}; head ${long.segments[3].checkpoint.head}; ` +
          `events before ${CUTOFF} removed by retention (positions 1–6 and 3 later)`,
      );
    });

    it('verifies with events that carry no head', async () => {
      const lines = truncatedExportOf(long, cut).map((l): Line =>
        l.kind === 'event' ? { ...l, head: undefined } : l,
      );
      await expect(verify(lines, jwks)).resolves.toMatchObject({ ok: true, summary: { events: 7 } });
    });

    it('verifies when the first checkpoint it keeps starts right after the cut, at the record’s head', async () => {
      const t = aTruncation(long, { throughPos: 8 });
      const lines = truncatedExportOf(long, t);
      expect(checkpoint(lines, 3)).toMatchObject({ firstPos: 9, prevHead: t.head });
      const result = await verify(lines, jwks);
      expect(result).toMatchObject({
        ok: true,
        summary: { events: 8, firstPos: 9, lastPos: 16, firstSeq: 3, lastSeq: 4, truncation: { removed: 0 } },
      });
      expect(describeSummary(result.summary)).toMatch(
        new RegExp(
          `; events before ${CUTOFF.replace(/\./g, '\\.')} removed by retention \\(positions 1–8\\)$`,
        ),
      );
    });

    it('verifies a checkpoint all of whose positions were removed: it has no event line, only its head', async () => {
      const t = aTruncation(long, { throughPos: 6, stragglers: [9, 10, 11, 12, 14] });
      const lines = truncatedExportOf(long, t);
      expect(lines.slice(checkpointAt(lines, 2) + 1, checkpointAt(lines, 3) + 1).map((l) => l.kind)).toEqual([
        'checkpoint',
      ]);
      await expect(verify(lines, jwks)).resolves.toMatchObject({
        ok: true,
        summary: { events: 5, checkpoints: 3, truncation: { throughPos: 6, removed: 5 } },
      });
    });

    it('verifies a cut that keeps every position (throughPos 0 at the genesis head) but stragglers', async () => {
      const t = aTruncation(long, { throughPos: 0, stragglers: [2, 3] });
      expect(t.nextSeq).toBe(1);
      const result = await verify(truncatedExportOf(long, t), jwks);
      expect(result).toMatchObject({ ok: true, summary: { events: 14, firstPos: 1, firstSeq: 1 } });
      expect(describeSummary(result.summary)).toMatch(/removed by retention \(2 positions\)$/);
    });

    it('verifies an export of the header and the truncation record only: everything sealed was removed', async () => {
      const t = aTruncation(long, { throughPos: 16 });
      const lines = truncatedExportOf(long, t);
      expect(lines.map((l) => l.kind)).toEqual(['export', 'truncation']);
      const result = await verify(lines, jwks);
      expect(result).toMatchObject({
        ok: true,
        summary: {
          events: 0,
          checkpoints: 0,
          truncation: { seq: 1, cutoff: CUTOFF, throughPos: 16, removed: 0 },
        },
      });
      expect(describeSummary(result.summary)).toBe(
        `OK ${long.chain}: the export holds only a truncation record: events before ${CUTOFF} removed by ` +
          `retention (positions 1–16), and no event sealed since`,
      );
    });

    it('verifies a range export that starts after the first checkpoint kept, still skipping the stragglers', async () => {
      const result = await verify(truncatedExportOf(long, cut, 3), jwks);
      expect(result).toMatchObject({
        ok: true,
        summary: { events: 5, firstPos: 9, lastPos: 16, firstSeq: 3, lastSeq: 4, truncation: { removed: 3 } },
      });
    });

    it('verifies a later truncation record of the chain (its seq 2), signed by another published key', async () => {
      const retention = aSigner('retention', new Date('2026-02-02T12:00:00Z'));
      const t = aTruncation(long, { throughPos: 10, stragglers: [13], seq: 2, by: retention });
      await expect(verify(truncatedExportOf(long, t), jwksOf(signer, retention))).resolves.toMatchObject({
        ok: true,
        summary: { firstSeq: 3, kids: [signer.kid], truncation: { seq: 2, throughPos: 10, removed: 1 } },
      });
    });
  });

  describe('a tampered one', () => {
    it('refuses a truncation record signed by a key the JWKS does not hold', async () => {
      const lines = truncatedExportOf(long, cut);
      lines[truncationAt(lines)] = resignTruncation(cut, aSigner());
      expectFailure(await verify(lines, jwks), /truncation record 1 is signed by unknown key key-/);
    });

    it.each([
      ['head', { head: 'ab'.repeat(32) }],
      ['throughPos', { throughPos: 7 }],
      [
        'a removed entry',
        { removed: [{ ...cut.removed[0], entry: 'cd'.repeat(32) }, ...cut.removed.slice(1)] },
      ],
      ['the removed positions', { removed: cut.removed.slice(1) }],
      ['nextSeq', { nextSeq: 3 }],
      ['cutoff', { cutoff: '2026-01-01T00:00:00.000000Z' }],
    ])('refuses a truncation record whose %s was edited under its old signature', async (_f, change) => {
      const lines = truncatedExportOf(long, cut);
      lines[truncationAt(lines)] = { ...cut, ...change };
      expectFailure(await verify(lines, jwks), /truncation record 1 has an invalid signature/);
    });

    it("refuses a truncation record signed outside its key's validity window", async () => {
      const retired = aSigner('retired', KEY_FROM, new Date('2026-02-02T12:00:00Z'));
      const lines = truncatedExportOf(long, cut);
      lines[truncationAt(lines)] = resignTruncation(cut, retired);
      expectFailure(
        await verify(lines, jwksOf(signer, retired)),
        /truncation record 1 was signed outside key retired's validity window/,
      );
      lines[truncationAt(lines)] = resignTruncation(cut, signer, { truncatedAt: '2026-13-45T00:00:00Z' });
      expectFailure(
        await verify(lines, jwks),
        /truncation record 1 was signed outside key .*'s validity window/,
      );
    });

    it('names a kept event that was altered, in the checkpoint the cut straddles and after a straggler', async () => {
      for (const pos of [7, 11, 14]) {
        const lines = truncatedExportOf(long, cut);
        lines[eventAt(lines, pos)] = { ...event(lines, pos), action: 'connection.revoked' };
        expectFailure(
          await verify(lines, jwks),
          new RegExp(`event ${idOf(pos)} \\(position ${pos}\\) does not match its seal`),
          idOf(pos),
        );
      }
    });

    it('names the first event of the checkpoint when a kept event without heads was altered', async () => {
      const lines = truncatedExportOf(long, cut).map((l): Line =>
        l.kind === 'event' ? { ...l, head: undefined } : l,
      );
      lines[eventAt(lines, 11)] = { ...event(lines, 11), outcome: 'denied' };
      expectFailure(await verify(lines, jwks), /do not hash to checkpoint 3's head/, idOf(9));
    });

    it('names the event after a kept event that was removed, across a straggler too', async () => {
      let lines = truncatedExportOf(long, cut);
      lines.splice(eventAt(lines, 11), 1);
      expectFailure(
        await verify(lines, jwks),
        /position 11 is missing: an event was removed before event/,
        idOf(12),
      );
      lines = truncatedExportOf(long, cut);
      lines.splice(eventAt(lines, 14), 1);
      expectFailure(await verify(lines, jwks), /position 14 is missing/, idOf(15));
      lines = truncatedExportOf(long, cut);
      lines.splice(eventAt(lines, 8), 1);
      expectFailure(
        await verify(lines, jwks),
        /after position 7 up to 8 \(checkpoint 2\) are missing/,
        idOf(7),
      );
    });

    it("detects a checkpoint's last kept event removed when its last position is a straggler", async () => {
      const lines = truncatedExportOf(long, cut);
      lines.splice(eventAt(lines, 15), 1);
      expectFailure(
        await verify(lines, jwks),
        /after position 14 up to 16 \(checkpoint 4\) are missing/,
        idOf(14),
      );
    });

    it('detects the first kept event removed, naming the one after it', async () => {
      const lines = truncatedExportOf(long, cut);
      lines.splice(eventAt(lines, 7), 1);
      expectFailure(
        await verify(lines, jwks),
        /events from position 7, covered by checkpoint 2, are missing/,
        idOf(8),
      );
    });

    it('names a removed event put back as an event line, a straggler or one before the cut', async () => {
      const events = eventsOf(long);
      let lines = truncatedExportOf(long, cut);
      lines.splice(eventAt(lines, 11), 0, structuredClone(events.get(10)!));
      expectFailure(
        await verify(lines, jwks),
        /event \d+ claims position 10, which truncation record 1 says retention removed: it was inserted/,
        idOf(10),
      );
      lines = truncatedExportOf(long, cut);
      lines.splice(eventAt(lines, 7), 0, structuredClone(events.get(6)!));
      expectFailure(await verify(lines, jwks), /claims position 6, which truncation record 1/, idOf(6));
    });

    it('refuses a record that claims one more removed position, re-signed by a key the JWKS does not hold', async () => {
      const events = eventsOf(long);
      const lines = truncatedExportOf(long, cut);
      const removed = [...cut.removed, { pos: 11, entry: entryHash(events.get(11)!).toString('hex') }].sort(
        (a, b) => a.pos - b.pos,
      );
      lines[truncationAt(lines)] = resignTruncation(cut, aSigner(), { removed });
      lines.splice(eventAt(lines, 11), 1);
      expectFailure(await verify(lines, jwks), /truncation record 1 is signed by unknown key/);
    });

    it('detects a removed entry hash that is wrong in an honestly signed record, at the event after it', async () => {
      const lines = truncatedExportOf(long, cut);
      const removed = cut.removed.map((r) => (r.pos === 10 ? { ...r, entry: 'ef'.repeat(32) } : r));
      lines[truncationAt(lines)] = resignTruncation(cut, signer, { removed });
      expectFailure(
        await verify(lines, jwks),
        /event \d+ \(position 11\) does not match its seal: .*, or truncation record 1 is wrong about the positions it removed/,
        idOf(11),
      );
    });

    it("detects a wrong removed entry at a checkpoint's last position by the checkpoint's head", async () => {
      const lines = truncatedExportOf(long, cut);
      const removed = cut.removed.map((r) => (r.pos === 16 ? { ...r, entry: 'ef'.repeat(32) } : r));
      lines[truncationAt(lines)] = resignTruncation(cut, signer, { removed });
      expectFailure(
        await verify(lines, jwks),
        /events \d+…\d+ do not hash to checkpoint 4's head: .*truncation record 1 is wrong about the positions it removed/,
        idOf(14),
      );
    });

    it('detects a wrong entry for a checkpoint all of whose positions were removed', async () => {
      const t = aTruncation(long, { throughPos: 6, stragglers: [9, 10, 11, 12] });
      const lines = truncatedExportOf(long, t);
      const removed = t.removed.map((r) => (r.pos === 11 ? { ...r, entry: 'ef'.repeat(32) } : r));
      lines[truncationAt(lines)] = resignTruncation(t, signer, { removed });
      expectFailure(
        await verify(lines, jwks),
        /positions 9–12, all removed by retention, do not hash to checkpoint 3's head/,
      );
    });

    it('detects a wrong head in an honestly signed record, at the first event kept', async () => {
      const lines = truncatedExportOf(long, cut);
      lines[truncationAt(lines)] = resignTruncation(cut, signer, { head: 'ab'.repeat(32) });
      expectFailure(await verify(lines, jwks), /event \d+ \(position 7\) does not match its seal/, idOf(7));
    });

    it('refuses a first checkpoint kept, starting right after the cut, whose prevHead is not the record’s head', async () => {
      const t = aTruncation(long, { throughPos: 8 });
      const lines = truncatedExportOf(long, t);
      lines[checkpointAt(lines, 3)] = resign(checkpoint(lines, 3), signer, { prevHead: 'cd'.repeat(32) });
      expectFailure(await verify(lines, jwks), /checkpoint 3 does not continue truncation record 1/);
    });

    it('refuses an honestly signed record with a wrong head when the first checkpoint kept starts after it', async () => {
      const t = aTruncation(long, { throughPos: 8 });
      let lines = truncatedExportOf(long, t);
      lines[truncationAt(lines)] = resignTruncation(t, signer, { head: 'ab'.repeat(32) });
      expectFailure(await verify(lines, jwks), /event \d+ \(position 9\) does not match its seal/, idOf(9));
      lines = lines.map((l): Line => (l.kind === 'event' ? { ...l, head: undefined } : l));
      expectFailure(await verify(lines, jwks), /checkpoint 3 does not continue truncation record 1/);
    });

    it('refuses a first checkpoint kept that starts after the cut leaves off', async () => {
      const t = aTruncation(long, { throughPos: 6 });
      const lines = truncatedExportOf(long, t);
      lines[truncationAt(lines)] = resignTruncation(t, signer, {
        throughPos: 3,
        head: eventsOf(long).get(3)!.head!,
      });
      expectFailure(await verify(lines, jwks), /checkpoint 2 does not continue truncation record 1/);
    });

    it('refuses a record whose throughPos is 0 but whose head is not the genesis head', async () => {
      const lines = truncatedExportOf(long, cut);
      lines[truncationAt(lines)] = resignTruncation(cut, signer, { throughPos: 0, head: 'ab'.repeat(32) });
      expectFailure(
        await verify(lines, jwks),
        /truncation record 1 removes no leading positions, but its head/,
      );
    });

    it('refuses a truncation record after a checkpoint, or after an event', async () => {
      let lines = exportOf(long);
      lines.splice(checkpointAt(lines, 1) + 1, 0, structuredClone(cut));
      expectFailure(
        await verify(lines, jwks),
        /a truncation record appears after events or checkpoints: it belongs directly after the header/,
      );
      lines = exportOf(long);
      lines.splice(eventAt(lines, 1) + 1, 0, structuredClone(cut));
      expectFailure(await verify(lines, jwks), /a truncation record appears after events/);
    });

    it('refuses two truncation records', async () => {
      const lines = truncatedExportOf(long, cut);
      lines.splice(truncationAt(lines), 0, aTruncation(long, { throughPos: 2 }));
      expectFailure(await verify(lines, jwks), /second truncation record \(after 1\)/);
    });

    it('refuses a truncation record of another chain', async () => {
      const other = aSealedChain({ signer });
      const lines = truncatedExportOf(long, cut);
      lines[truncationAt(lines)] = aTruncation(other, { throughPos: 6 });
      expectFailure(await verify(lines, jwks), /truncation record 1 belongs to another chain/);
    });

    it('refuses an export without a start whose checkpoints from nextSeq on are missing, naming them', async () => {
      let lines = truncatedExportOf(long, cut);
      lines.splice(eventAt(lines, 7), checkpointAt(lines, 2) - eventAt(lines, 7) + 1);
      expectFailure(
        await verify(lines, jwks),
        /checkpoint 2 is missing: an export with no start \("from"\) begins at checkpoint 2/,
        idOf(9),
      );
      lines = truncatedExportOf(long, cut);
      lines.splice(eventAt(lines, 7), checkpointAt(lines, 3) - eventAt(lines, 7) + 1);
      expectFailure(await verify(lines, jwks), /checkpoints 2–3 are missing/, idOf(14));
    });

    it('refuses a checkpoint before the cut as the first one', async () => {
      const lines = truncatedExportOf(long, cut);
      lines.splice(2, 0, structuredClone(long.segments[0].checkpoint));
      expectFailure(
        await verify(lines, jwks),
        /checkpoint 1 comes before checkpoint 2, the first that truncation record 1 keeps/,
      );
      // The same checkpoint under a record that (falsely, but signed) names it as the first one kept.
      lines[truncationAt(lines)] = resignTruncation(cut, signer, { nextSeq: 1 });
      expectFailure(
        await verify(lines, jwks),
        /checkpoint 1 covers only positions that truncation record 1 removed \(1–6\)/,
      );
    });

    it('refuses a range export whose first checkpoint starts inside the cut though it is not nextSeq', async () => {
      // A record that (falsely, but signed) puts the cut at 10 while still naming checkpoint 2 as the first kept.
      const lines = truncatedExportOf(long, cut, 3);
      lines.splice(eventAt(lines, 9), 1);
      lines[truncationAt(lines)] = resignTruncation(cut, signer, {
        throughPos: 10,
        head: eventsOf(long).get(10)!.head!,
        removed: [],
      });
      expectFailure(
        await verify(lines, jwks),
        /checkpoint 3 starts at position 9, which truncation record 1 removed/,
      );
    });

    it.each([
      ['a negative throughPos', { throughPos: -1 }],
      ['a fractional throughPos', { throughPos: 6.5 }],
      ['a removed position not after throughPos', { removed: [{ pos: 6, entry: 'ab'.repeat(32) }] }],
      [
        'removed positions out of order',
        {
          removed: [
            { pos: 13, entry: 'ab'.repeat(32) },
            { pos: 10, entry: 'ab'.repeat(32) },
          ],
        },
      ],
      [
        'a removed position twice',
        {
          removed: [
            { pos: 10, entry: 'ab'.repeat(32) },
            { pos: 10, entry: 'ab'.repeat(32) },
          ],
        },
      ],
      ['a removed entry that is not lowercase hex', { removed: [{ pos: 10, entry: 'AB'.repeat(32) }] }],
      ['a removed entry without its hash', { removed: [{ pos: 10 }] }],
      ['a nextSeq of 0', { nextSeq: 0 }],
      ['a cutoff that is no ISO timestamp', { cutoff: 'last March' }],
      ['a truncatedAt that is no ISO timestamp', { truncatedAt: 1767225600000 }],
    ])('refuses a truncation line with %s as malformed', async (_what, change) => {
      const lines = truncatedExportOf(long, cut);
      lines[truncationAt(lines)] = { ...cut, ...(change as Partial<TruncationLine>) };
      expectFailure(await verify(lines, jwks), /malformed truncation line/);
    });
  });

  it('signs the JCS of the record without "sig", like a checkpoint', () => {
    const { sig, ...body } = truncation(truncatedExportOf(long, cut));
    expect(signingInput(body).toString('utf8')).toBe(jcs(body));
    expect(
      crypto.verify(
        null,
        signingInput(body),
        crypto.createPublicKey(signer.key),
        Buffer.from(sig, 'base64url'),
      ),
    ).toBe(true);
  });
});

/** The worked example's fenced blocks, each found by the line before it, and its intermediate values. */
function workedExample() {
  const doc = fs.readFileSync(path.join(__dirname, '../../../docs/audit-format.md'), 'utf8');
  const example = doc.slice(doc.indexOf('## Worked example'));
  const block = (label: string): string => {
    const escaped = label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const m = new RegExp(`${escaped}\\n+\`\`\`[a-z]*\\n([\\s\\S]*?)\\n\`\`\``).exec(example);
    if (!m) throw new Error(`docs/audit-format.md: no block after "${label}"`);
    return m[1];
  };
  const values = new Map(
    block('Intermediate values:')
      .split('\n')
      .map((l) => /^(.+?)\s{2,}([0-9a-f]{64})$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1], m[2]]),
  );
  const value = (name: string) => {
    const v = values.get(name);
    if (v === undefined) throw new Error(`docs/audit-format.md: no intermediate value "${name}"`);
    return v;
  };
  const lines = block('The export:').split('\n');
  const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { block, value, lines, parsed, jwks: JSON.parse(block('The JWKS:')) as unknown };
}

describe('the worked example in docs/audit-format.md', () => {
  it('is an export of two events and one checkpoint that verifies against its JWKS', async () => {
    const { block, lines, parsed, jwks: exampleJwks } = workedExample();
    expect(parsed.map((l) => l.kind)).toEqual(['export', 'event', 'event', 'checkpoint']);
    const result = await verifyExport(lines, exampleJwks);
    expect(result.ok).toBe(true);
    expect(block('`custos audit verify` prints:')).toBe(describeSummary(result.summary));
  });

  it('states the intermediate values the code computes', () => {
    const { block, value, parsed } = workedExample();
    const [header, ev1, ev2, cp] = parsed;
    const chain = header.chain as string;
    const { head: _h1, ...hashed1 } = ev1;
    expect(block('The hash input of the first event (its line without `head`, in JCS):')).toBe(jcs(hashed1));
    expect(value('genesis head')).toBe(genesisHead(chain).toString('hex'));
    const e1 = entryHash(ev1 as unknown as EventLine);
    const h1 = nextHead(genesisHead(chain), e1);
    const e2 = entryHash(ev2 as unknown as EventLine);
    const h2 = nextHead(h1, e2);
    expect(value('entry hash 1')).toBe(e1.toString('hex'));
    expect(value('head 1')).toBe(h1.toString('hex'));
    expect(value('entry hash 2')).toBe(e2.toString('hex'));
    expect(value('head 2')).toBe(h2.toString('hex'));
    expect([ev1.head, ev2.head, cp.prevHead, cp.head]).toEqual([
      h1.toString('hex'),
      h2.toString('hex'),
      genesisHead(chain).toString('hex'),
      h2.toString('hex'),
    ]);
    expect(block("The checkpoint's signing input (the checkpoint without `sig`, in JCS):")).toBe(
      signingInput(cp as unknown as CheckpointBody).toString('utf8'),
    );
  });
});
