// The tamper-evident audit store: an append-only hash chain of FHIR AuditEvents (server/audit/chain.ts)
// in audit_events, with signed checkpoints, retention purges that keep the chain verifiable, and
// privacy holds.
//
// Writing: appends are group-committed. While one transaction is in flight, new appends queue; the
// next flush writes every queued event in ONE transaction (lock the chain head, hash in order, insert,
// move the head, commit) and then settles every waiting promise. One flush at a time per database
// handle in this process; across processes (PostgreSQL instances) the head row lock (SELECT ... FOR
// UPDATE) puts writers in a single order. An append resolves only after its transaction committed
// (SQLite: synchronous = FULL, see server/db.ts), and rejects with AuditWriteError when it could not be
// written, so callers fail closed (503).
import type { Knex } from 'knex';
import type { Db } from '../db.ts';
import type { AuditEvent, AuditSearch, AuditStore, AuditVerification, DisclosurePage, DisclosureQuery, DisclosureSummaryRow, PurgeResult } from './types.ts';
import { canonicalJson, ChainVerifier, chainHash, checkRecordContent, GENESIS_HASH, type ChainHead, type ChainPoint, type ChainRecord } from './chain.ts';
import { createHash } from 'node:crypto';
import { groupCommitFor, type GroupCommit, type Outcomes, type WriteKind } from '../group-commit.ts';
import { insertValues, isPg, rawTransaction, transactionStatements, type Statements } from '../db-statements.ts';
import { disclosureApp } from './disclosures.ts';
import { KeyEncryptionError } from '../oidc/keys.ts';

export interface AuditStoreOptions {
  /** Signs a checkpoint or purge payload: a JWS compact serialization (the server's signing key). */
  sign(payload: object): Promise<string>;
  /** Verifies a JWS made by `sign` and returns its payload; throws when it does not verify. */
  verify(jws: string): Promise<object>;
  /** Makes `sign` ready without database access (called before a transaction that signs). */
  prepare?(): Promise<void>;
  /** A signed checkpoint after this many records since the last one (default 1000). */
  checkpointEvery?: number;
  /** While records are written, the chain head is signed at least this often (ms, default 10 000); and at close(). */
  headEveryMs?: number;
  /** Called with every signed head, to keep it outside the database (a log line, the audit repository). */
  onCheckpoint?: (head: SignedHead) => void;
  now?: () => Date;
  /** Called after every committed group-commit transaction (metrics, tests). */
  onFlush?: (batch: BatchInfo) => void;
  /** Where failures that do not fail an append (a checkpoint) are reported; default console.error. */
  log?: (message: string, err: unknown) => void;
}

/** A signed chain head: the record at `seq` has `hash`; `jws` is the server's signature over both. */
export interface SignedHead {
  seq: number;
  hash: string;
  jws: string;
}

export interface BatchInfo {
  /** Events written by this transaction. */
  events: number;
  /** append() calls settled by it. */
  appends: number;
  head: ChainHead;
}

/** An append that could not be durably stored: the caller must not answer the access (503). */
export class AuditWriteError extends Error {
  override name = 'AuditWriteError';
}


// --- what is stored per event ------------------------------------------------------------------

const MAX_TERM = 200;
const cut = (value: string, max: number) => (value.length > max ? value.slice(0, max) : value);
const str = (value: unknown): string | undefined => (typeof value === 'string' && value !== '' ? value : undefined);
/** A search value: one, or any of several (FHIR's comma-separated OR). */
const anyOf = (value: string | readonly string[]): readonly string[] => (typeof value === 'string' ? [value] : value);
/** A string value that is one of `wanted`. */
const isAnyOf = (value: unknown, wanted: string | readonly string[]) => typeof value === 'string' && anyOf(wanted).includes(value);
const list = (value: unknown): unknown[] => (Array.isArray(value) ? value : value === undefined || value === null ? [] : [value]);

interface Who { identifier?: { value?: unknown }; reference?: unknown }
interface Agent { who?: Who }
interface Entity { what?: { reference?: unknown }; role?: { code?: unknown } }

function agentValues(event: Record<string, unknown>): string[] {
  return list(event.agent).flatMap((a) => {
    const who = (a as Agent | null)?.who;
    return [str(who?.identifier?.value), str(who?.reference)].filter((v): v is string => v !== undefined);
  });
}
const entityValues = (event: Record<string, unknown>): string[] =>
  list(event.entity).map((e) => str((e as Entity | null)?.what?.reference)).filter((v): v is string => v !== undefined);
const subtypeCodes = (event: Record<string, unknown>): string[] =>
  list(event.subtype).map((s) => str((s as { code?: unknown } | null)?.code)).filter((v): v is string => v !== undefined);

/** The event's patient: its Patient entity (object-role 1), as BALP's Patient profiles record it. */
export function patientOf(event: Record<string, unknown>): string | null {
  for (const e of list(event.entity) as (Entity | null)[]) {
    const ref = str(e?.what?.reference);
    if (String(e?.role?.code) === '1' && ref?.startsWith('Patient/')) return ref.slice('Patient/'.length);
  }
  return null;
}

/** The search terms an event may hold several of, for audit_index (values cut to 200 characters). */
export function indexTerms(event: Record<string, unknown>): [kind: string, value: string][] {
  const terms = new Map<string, [string, string]>();
  const add = (kind: string, values: string[]) => {
    for (const v of values) terms.set(`${kind}\u0000${cut(v, MAX_TERM)}`, [kind, cut(v, MAX_TERM)]);
  };
  add('agent', agentValues(event));
  add('entity', entityValues(event));
  add('subtype', subtypeCodes(event));
  return [...terms.values()];
}

/**
 * The single-valued search columns of audit_events (cut to their column sizes; matches are re-checked).
 * Derived from the hashed event only, so verify() can recompute them.
 */
export function indexColumns(event: Record<string, unknown>) {
  const patient = patientOf(event);
  const subtype = subtypeCodes(event)[0];
  const outcome = str(event.outcome);
  const app = disclosureApp(event as AuditEvent);
  return {
    recordedAt: Date.parse(String(event.recorded)),
    typeCode: cut(str((event.type as { code?: unknown } | undefined)?.code) ?? '', 64),
    subtypeCode: subtype === undefined ? null : cut(subtype, 64),
    patientId: patient === null ? null : cut(patient, 64),
    outcome: outcome === undefined ? null : cut(outcome, 8),
    /** For the accounting of disclosures (paged and summarised in the database): the app of a disclosure, else null. */
    disclosureApp: app === null ? null : cut(app, MAX_TERM),
  };
}

interface Prepared {
  id: string;
  json: string;
  eventHash: string;
  columns: ReturnType<typeof indexColumns>;
  terms: [string, string][];
}

/** Validates and snapshots an event (its canonical JSON is what is stored and hashed). */
function prepare(event: AuditEvent): Prepared {
  if (!event || typeof event !== 'object' || event.resourceType !== 'AuditEvent') throw new TypeError('not an AuditEvent');
  if (typeof event.id !== 'string' || !/^[A-Za-z0-9\-.]{1,64}$/.test(event.id)) throw new TypeError(`AuditEvent id ${JSON.stringify(event.id)} is not a FHIR id`);
  // recorded_at is derived from `recorded` and re-derived by verify(): it must be there.
  if (typeof event.recorded !== 'string' || !Number.isFinite(Date.parse(event.recorded))) throw new TypeError(`AuditEvent ${event.id} has no valid recorded time`);
  const json = canonicalJson(event);
  const snapshot = JSON.parse(json) as Record<string, unknown>;
  return {
    id: event.id,
    json,
    eventHash: createHash('sha256').update(json, 'utf8').digest('hex'),
    columns: indexColumns(snapshot),
    terms: indexTerms(snapshot),
  };
}

// --- the group-commit writer (one per database handle in this process) --------------------------

interface HeadRow { seq: number | string; hash: string; event_id: string | null }

/** Locks the chain head for this transaction and reads it: the single-writer point. */
async function lockHead({ q, pg, rows }: Statements): Promise<ChainHead> {
  // SQLite: writing first takes the database write lock before anything is read (busy_timeout waits
  // for other processes), so what it returns cannot be stale.
  const [row] = await rows<HeadRow>(pg
    ? q('audit_chain_head').where('id', 1).forUpdate().select('seq', 'hash', 'event_id')
    : q('audit_chain_head').where('id', 1).update({ seq: q.raw('seq') }, ['seq', 'hash', 'event_id']));
  if (!row) throw new Error('the audit chain head is missing (run the migrations)');
  return { seq: Number(row.seq), hash: row.hash, eventId: row.event_id };
}

async function insertChunked({ q, rows }: Statements, table: string, values: Record<string, unknown>[], size: number) {
  for (let i = 0; i < values.length; i += size) await rows(insertValues(q, table, values.slice(i, i + size)));
}

const isUniqueViolation = (err: unknown) => ['23505', 'SQLITE_CONSTRAINT'].includes(String((err as { code?: unknown })?.code));

/** The appends of a batch that may be written: an id already in the chain, or twice in the batch, refuses that append only. */
async function refuseDuplicates({ q, rows }: Statements, batch: Prepared[][]): Promise<(Error | undefined)[]> {
  const ids = batch.flat().map((i) => i.id);
  const existing = new Set<string>();
  for (let i = 0; i < ids.length; i += 500) {
    for (const row of await rows<{ id: string }>(q('audit_events').whereIn('id', ids.slice(i, i + 500)).select('id'))) existing.add(row.id);
  }
  const seen = new Set<string>();
  return batch.map((items) => {
    const clash = items.find((item, index) => existing.has(item.id) || seen.has(item.id) || items.findIndex((o) => o.id === item.id) !== index);
    if (clash) return new AuditWriteError(`AuditEvent ${clash.id} is already in the audit trail`);
    for (const item of items) seen.add(item.id);
    return undefined;
  });
}

/** Hashes the batch onto the chain and writes it; returns the new head. */
async function writeChain(statements: Statements, start: ChainHead, items: Prepared[]): Promise<ChainHead> {
  let seq = start.seq;
  let prev = start.hash;
  let lastId = start.eventId ?? null;
  const rows: Record<string, unknown>[] = [];
  const terms: Record<string, unknown>[] = [];
  for (const item of items) {
    seq++;
    const hash = chainHash(prev, item.eventHash);
    rows.push({
      seq, id: item.id, recorded_at: item.columns.recordedAt, type_code: item.columns.typeCode,
      subtype_code: item.columns.subtypeCode, patient_id: item.columns.patientId, outcome: item.columns.outcome,
      disclosure_app: item.columns.disclosureApp,
      event: item.json, event_hash: item.eventHash, prev_hash: prev, hash,
    });
    for (const [kind, value] of item.terms) terms.push({ seq, kind, value });
    prev = hash;
    lastId = item.id;
  }
  if (!rows.length) return start;
  await insertChunked(statements, 'audit_events', rows, 100);
  await insertChunked(statements, 'audit_index', terms, 300);
  await statements.rows(statements.q('audit_chain_head').where('id', 1).update({ seq, hash: prev, event_id: lastId }));
  return { seq, hash: prev, eventId: lastId };
}

/** Audit appends as a kind of group-committed write: each item is one append (its events, in order). */
class ChainWriter implements WriteKind<Prepared[], void> {
  readonly listeners = new Set<(batch: BatchInfo) => void>();
  private readonly commits: GroupCommit;

  constructor(db: Db) {
    this.commits = groupCommitFor(db);
  }

  append(items: Prepared[]): Promise<void> {
    return items.length ? this.commits.submit(this, items) : Promise.resolve();
  }

  idle(): Promise<void> {
    return this.commits.idle();
  }

  /** Ids are random UUIDs: a clash is a caller's mistake, looked for only when the insert fails (then writeAlone runs). */
  async write(statements: Statements, batch: Prepared[][], refused: (Error | undefined)[] = batch.map(() => undefined)): Promise<Outcomes<void>> {
    const head = await writeChain(statements, await lockHead(statements), batch.flatMap((items, i) => (refused[i] ? [] : items)));
    return { outcomes: refused.map((err) => err ?? undefined), committed: () => this.notify(batch, refused, head) };
  }

  async writeAlone(db: Db, batch: Prepared[][]): Promise<Outcomes<void>> {
    try {
      try {
        return await rawTransaction(db, (statements) => this.write(statements, batch));
      } catch (err) {
        if (!isUniqueViolation(err)) throw err;
        const refused = await rawTransaction(db, (statements) => refuseDuplicates(statements, batch));
        return await rawTransaction(db, (statements) => this.write(statements, batch, refused));
      }
    } catch (err) {
      throw new AuditWriteError(`the audit store could not write ${batch.length} append(s): ${(err as Error)?.message ?? err}`, { cause: err });
    }
  }

  private notify(batch: Prepared[][], refused: (Error | undefined)[], head: ChainHead) {
    const written = batch.filter((_, i) => !refused[i]);
    const info: BatchInfo = { events: written.reduce((n, items) => n + items.length, 0), appends: written.length, head };
    for (const listener of this.listeners) {
      try {
        listener(info);
      } catch (err) {
        console.error('smart-auth: an audit flush listener failed:', err);
      }
    }
  }
}

const writers = new WeakMap<Db, ChainWriter>();

function writerFor(db: Db): ChainWriter {
  let writer = writers.get(db);
  if (!writer) writers.set(db, (writer = new ChainWriter(db)));
  return writer;
}

/**
 * Appends to the chain without a store (no checkpoints of its own): for the authorization server's
 * simple sink (server/audit/store.ts). Shares the group-commit queue of any store on the same handle.
 */
export function appendToChain(db: Db, events: AuditEvent[]): Promise<void> {
  let items: Prepared[];
  try {
    items = events.map((e) => prepare(e));
  } catch (err) {
    return Promise.reject(err);
  }
  return writerFor(db).append(items);
}

/**
 * Runs `change` and appends the records `records` makes of its result in one transaction: both are
 * stored, or neither. For an administrator's changes, which must not happen unrecorded. SQLite: the
 * chain head is locked first, which takes the write lock before anything is read (a deferred transaction
 * that reads and then writes fails at once when another connection wrote meanwhile); PostgreSQL locks its
 * row only to append, so other instances' appends wait for no more than that. The append bypasses the
 * group commit. AuditWriteError when the records cannot be written.
 */
export async function changeWithRecords<T>(db: Db, change: (trx: Knex.Transaction) => Promise<T>, records: (value: T) => AuditEvent[]): Promise<T> {
  const writer = writerFor(db);
  const audit = <R>(step: () => Promise<R>) => step().catch((err: unknown) => {
    throw new AuditWriteError(`the audit store could not write: ${(err as Error)?.message ?? err}`, { cause: err });
  });
  const { value, committed } = await db.transaction(async (trx) => {
    const statements = transactionStatements(trx);
    if (!statements.pg) await audit(() => lockHead(statements));
    const value = await change(trx);
    const items = records(value).map((e) => prepare(e));
    return { value, committed: (await audit(() => writer.write(statements, [items]))).committed };
  });
  committed?.();
  return value;
}

// --- the store ------------------------------------------------------------------------------------

interface EventRow {
  seq: number | string; id: string; event: string; event_hash: string; prev_hash: string; hash: string;
  recorded_at: number | string; type_code: string; subtype_code: string | null; patient_id: string | null; outcome: string | null;
  disclosure_app: string | null;
}
const toRecord = (r: EventRow): ChainRecord => ({ seq: Number(r.seq), id: r.id, event: r.event, eventHash: r.event_hash, prevHash: r.prev_hash, hash: r.hash });
const EVENT_COLUMNS = ['seq', 'id', 'event', 'event_hash', 'prev_hash', 'hash', 'recorded_at', 'type_code', 'subtype_code', 'patient_id', 'outcome', 'disclosure_app'];

/**
 * What differs between a record's stored search columns and index rows and what its (verified) event
 * says they are: these decide searches, reports, holds and purges, so a difference is a changed record.
 */
function derivedProblem(row: EventRow, terms: readonly [kind: string, value: string][]): string | undefined {
  const event = JSON.parse(row.event) as Record<string, unknown>;
  const expected = indexColumns(event);
  const stored = {
    recordedAt: Number(row.recorded_at), typeCode: row.type_code, subtypeCode: row.subtype_code ?? null,
    patientId: row.patient_id ?? null, outcome: row.outcome ?? null, disclosureApp: row.disclosure_app ?? null,
  };
  const names = {
    recordedAt: 'recorded_at', typeCode: 'type_code', subtypeCode: 'subtype_code', patientId: 'patient_id', outcome: 'outcome', disclosureApp: 'disclosure_app',
  } as const;
  for (const key of Object.keys(names) as (keyof typeof names)[]) {
    if (stored[key] !== expected[key]) {
      return `its ${names[key]} column (${String(stored[key])}) differs from its stored event (${String(expected[key])}): the record was changed`;
    }
  }
  const key = ([kind, value]: readonly [string, string]) => `${kind}=${value}`;
  const left = terms.map(key);
  const missing: string[] = [];
  for (const term of indexTerms(event).map(key)) {
    const at = left.indexOf(term);
    if (at < 0) missing.push(term);
    else left.splice(at, 1);
  }
  if (missing.length) return `its search index lacks ${missing.join(', ')}: the index was changed`;
  if (left.length) return `its search index has rows its event does not give (${left.join(', ')}): the index was changed`;
  return undefined;
}

interface CheckpointPayload { seq: number; hash: string; records: number; iat: number }
interface PurgePayload { purge: { before: string; anchor: ChainPoint; removed: number; kept: [number, string, string][] }; iat: number }

const BATCH = 1000;

export function createAuditStore(db: Db, options: AuditStoreOptions): AuditStore {
  const writer = writerFor(db);
  const every = Math.max(1, options.checkpointEvery ?? 1000);
  const now = options.now ?? (() => new Date());
  const log = options.log ?? ((message: string, err: unknown) => console.error(`smart-auth: ${message}`, err));
  let closed = false;
  let lastCheckpointSeq: number | undefined;
  let checkpointing: Promise<void> | null = null;

  // Signed heads: every `every` records, at least every `headEvery` ms while records are written, and at close.
  const headEvery = Math.max(1, options.headEveryMs ?? 10_000);
  let latest: ChainPoint = { seq: 0, hash: GENESIS_HASH };
  let lastSignedAt = Date.now();
  let closing = false;
  let headTimer: NodeJS.Timeout | undefined;
  const due = () => closing || latest.seq - (lastCheckpointSeq ?? 0) >= every || Date.now() - lastSignedAt >= headEvery;
  // The newest checkpoint is re-read first: other instances on the same chain write checkpoints too.
  const lastStored = async () => Number((await db('audit_checkpoints').max({ seq: 'seq' }).first())?.seq ?? 0);

  /** Signs the newest head this process wrote when it is due; one signer at a time, catching up with later batches. */
  function signLatest(): Promise<void> {
    checkpointing ??= (async () => {
      lastCheckpointSeq = Math.max(lastCheckpointSeq ?? 0, await lastStored());
      while (latest.seq > lastCheckpointSeq && due()) {
        const point = latest;
        await signCheckpoint(db, point);
        lastCheckpointSeq = Math.max(lastCheckpointSeq, point.seq, await lastStored());
      }
    })()
      .catch((err) => {
        lastSignedAt = Date.now();
        log('writing an audit checkpoint failed (the appends are stored):', err);
      })
      .finally(() => {
        checkpointing = null;
        if (latest.seq > (lastCheckpointSeq ?? 0)) scheduleHead();
      });
    return checkpointing;
  }

  /** An unsigned tail is signed once `headEvery` has passed since the last signed head. */
  function scheduleHead() {
    if (headTimer || closing || closed) return;
    headTimer = setTimeout(() => {
      headTimer = undefined;
      void signLatest();
    }, Math.max(0, lastSignedAt + headEvery - Date.now()));
    headTimer.unref();
  }

  const onBatch = (batch: BatchInfo) => {
    options.onFlush?.(batch);
    if (batch.head.seq > latest.seq) latest = { seq: batch.head.seq, hash: batch.head.hash };
    if (checkpointing) return; // it catches up, or schedules the next head
    if (lastCheckpointSeq === undefined || due()) void signLatest();
    else scheduleHead();
  };
  writer.listeners.add(onBatch);

  async function signCheckpoint(trx: Knex, point: ChainPoint): Promise<{ id: number; seq: number }> {
    const at = now();
    const payload: CheckpointPayload = { seq: point.seq, hash: point.hash, records: point.seq, iat: Math.floor(at.getTime() / 1000) };
    const jws = await options.sign(payload);
    const [inserted] = await trx('audit_checkpoints').insert({ seq: point.seq, hash: point.hash, jws, created_at: at.getTime() }, ['id']);
    lastSignedAt = Date.now();
    try {
      options.onCheckpoint?.({ seq: point.seq, hash: point.hash, jws });
    } catch (err) {
      log('passing on a signed audit head failed:', err);
    }
    return { id: Number(typeof inserted === 'object' ? (inserted as { id: number }).id : inserted), seq: point.seq };
  }

  async function checkpoint(): Promise<void> {
    const row = await db('audit_chain_head').where('id', 1).first('seq', 'hash');
    if (!row) throw new Error('the audit chain head is missing (run the migrations)');
    const point = { seq: Number(row.seq), hash: row.hash as string };
    await signCheckpoint(db, point);
    lastCheckpointSeq = Math.max(lastCheckpointSeq ?? 0, point.seq);
  }

  async function append(events: AuditEvent[]): Promise<void> {
    if (closed) throw new AuditWriteError('the audit store is closed');
    return writer.append(events.map((e) => prepare(e)));
  }

  // --- verification ---

  async function readJws<T>(jws: string): Promise<T | undefined> {
    try {
      return (await options.verify(jws)) as T;
    } catch (err) {
      if (err instanceof KeyEncryptionError) throw err; // the keys cannot be read: no verdict on the signature
      return undefined;
    }
  }

  /** The index rows of a batch of records, by seq. */
  async function termsOf(rows: EventRow[]): Promise<Map<number, [string, string][]>> {
    const terms = new Map<number, [string, string][]>(rows.map((r) => [Number(r.seq), []]));
    const found: { seq: number | string; kind: string; value: string }[] = rows.length
      ? await db('audit_index').where('seq', '>=', Number(rows[0].seq)).andWhere('seq', '<=', Number(rows[rows.length - 1].seq)).select('seq', 'kind', 'value')
      : [];
    for (const t of found) terms.get(Number(t.seq))?.push([t.kind, t.value]);
    return terms;
  }

  async function verify(external?: string): Promise<AuditVerification> {
    // Checkpoints and purges before the head: a checkpoint beyond the head then proves records removed.
    const cpRows: { id: number; seq: number | string; hash: string; jws: string }[] = await db('audit_checkpoints').orderBy([{ column: 'seq' }, { column: 'id' }]).select('id', 'seq', 'hash', 'jws');
    const purgeRows: { id: number; anchor_seq: number | string; anchor_hash: string; jws: string }[] = await db('audit_purges')
      .orderBy([{ column: 'anchor_seq', order: 'desc' }, { column: 'id', order: 'desc' }]).select('id', 'anchor_seq', 'anchor_hash', 'jws');
    const headRow: HeadRow | undefined = await db('audit_chain_head').where('id', 1).first('seq', 'hash', 'event_id');
    let records = 0;
    const fail = (seq: number, eventId: string, problem: string): AuditVerification => ({ ok: false, records, seq, eventId, problem });
    if (!headRow) return fail(0, '', 'the audit chain head is missing');
    const head: ChainHead = { seq: Number(headRow.seq), hash: headRow.hash, eventId: headRow.event_id };

    const checkpoints: { id: number; seq: number; hash: string; valid: boolean }[] = [];
    for (let i = 0; i < cpRows.length; i += 16) { // a few signatures at a time (verify may read the key store)
      checkpoints.push(...await Promise.all(cpRows.slice(i, i + 16).map(async (row) => {
        const payload = await readJws<CheckpointPayload>(row.jws);
        const valid = !!payload && payload.seq === Number(row.seq) && payload.hash === row.hash;
        return { id: row.id, seq: Number(row.seq), hash: valid ? payload.hash : row.hash, valid };
      })));
    }
    // A signed head kept outside the database: the chain must reach it, with the same hash.
    if (external !== undefined) {
      const payload = await readJws<CheckpointPayload>(external);
      if (!payload || !Number.isSafeInteger(payload.seq) || typeof payload.hash !== 'string') {
        return fail(0, '', 'the signed head given does not verify with the server\'s keys');
      }
      checkpoints.push({ id: 0, seq: payload.seq, hash: payload.hash, valid: true });
      checkpoints.sort((a, b) => a.seq - b.seq || a.id - b.id);
    }

    // The latest purge: the chain continues from its anchor, which its signature and a checkpoint vouch for.
    let anchor: ChainPoint | undefined;
    const kept = new Map<number, { id: string; eventHash: string }>();
    for (const [index, row] of purgeRows.entries()) {
      const payload = await readJws<PurgePayload>(row.jws);
      const p = payload?.purge;
      if (!p || p.anchor?.seq !== Number(row.anchor_seq) || p.anchor?.hash !== row.anchor_hash || !Array.isArray(p.kept)) {
        return fail(Number(row.anchor_seq), '', `the purge record up to seq ${row.anchor_seq} does not verify: its signature is invalid or it was altered`);
      }
      if (index === 0) {
        anchor = p.anchor;
        for (const [seq, id, eventHash] of p.kept) kept.set(seq, { id, eventHash });
      }
    }
    if (anchor && !checkpoints.some((c) => c.valid && c.seq === anchor!.seq && c.hash === anchor!.hash)) {
      return fail(anchor.seq, '', `no valid signed checkpoint vouches for the purge anchor at seq ${anchor.seq}`);
    }

    let next = 0; // the next checkpoint to check
    // Checks the checkpoints up to `seq`; `at` is a chain position whose hash is known (verified).
    const checkpointsBefore = (seq: number, at?: { seq: number; hash: string; eventId: string | null }): AuditVerification | undefined => {
      for (; next < checkpoints.length && checkpoints[next].seq <= seq; next++) {
        const c = checkpoints[next];
        const eventId = at && c.seq === at.seq ? at.eventId ?? '' : '';
        if (!c.valid) return fail(c.seq, eventId, `the checkpoint at seq ${c.seq} does not verify: its signature is invalid or it was altered`);
        const known = c.seq === 0 ? GENESIS_HASH : c.seq === anchor?.seq ? anchor.hash : c.seq === at?.seq ? at.hash : undefined;
        if (known !== undefined && c.hash !== known) {
          return fail(c.seq, eventId, `the chain's hash at seq ${c.seq}${eventId ? ` (AuditEvent ${eventId})` : ''} differs from the one the signed checkpoint vouches for: records up to it were changed or removed and the chain rewritten`);
        }
      }
      return undefined;
    };

    // Records kept below the purge anchor (privacy holds): each checked on its own against the purge's list.
    const anchorSeq = anchor?.seq ?? 0;
    for (let after = 0; anchorSeq > 0;) {
      const rows: EventRow[] = await db('audit_events').where('seq', '>', after).andWhere('seq', '<=', anchorSeq).orderBy('seq').limit(BATCH).select(EVENT_COLUMNS);
      if (!rows.length) break;
      const terms = await termsOf(rows);
      for (const [i, record] of rows.map(toRecord).entries()) {
        const failure = checkpointsBefore(record.seq - 1);
        if (failure) return failure;
        const listed = kept.get(record.seq);
        if (!listed) return fail(record.seq, record.id, `record seq ${record.seq} (AuditEvent ${record.id}) lies in the purged range but the purge did not keep it: it was added or moved`);
        const problem = listed.id !== record.id || listed.eventHash !== record.eventHash ? 'it differs from the record the purge kept: the record was changed'
          : checkRecordContent(record) ?? derivedProblem(rows[i], terms.get(record.seq)!);
        if (problem) return fail(record.seq, record.id, `record seq ${record.seq} (AuditEvent ${record.id}): ${problem}`);
        kept.delete(record.seq);
        records++;
      }
      after = Number(rows[rows.length - 1].seq);
    }
    for (const [seq, { id }] of [...kept].sort((a, b) => a[0] - b[0])) {
      return fail(seq, id, `record seq ${seq} (AuditEvent ${id}), kept by the purge, was removed`);
    }
    const atAnchor = checkpointsBefore(anchorSeq);
    if (atAnchor) return atAnchor;

    // The chain from the genesis or the anchor up to the head.
    const verifier = new ChainVerifier(anchor);
    for (let after = anchorSeq; ;) {
      const rows: EventRow[] = await db('audit_events').where('seq', '>', after).andWhere('seq', '<=', head.seq).orderBy('seq').limit(BATCH).select(EVENT_COLUMNS);
      if (!rows.length) break;
      const terms = await termsOf(rows);
      for (const [i, record] of rows.map(toRecord).entries()) {
        const before = checkpointsBefore(record.seq - 1, verifier.position);
        if (before) return before;
        const failure = verifier.push(record);
        if (failure) return fail(failure.seq, failure.eventId, failure.problem);
        const derived = derivedProblem(rows[i], terms.get(record.seq)!);
        if (derived) return fail(record.seq, record.id, `record seq ${record.seq} (AuditEvent ${record.id}): ${derived}`);
        records++;
        const at = checkpointsBefore(record.seq, { seq: record.seq, hash: record.hash, eventId: record.id });
        if (at) return at;
      }
      after = Number(rows[rows.length - 1].seq);
    }
    const end = verifier.end(head);
    if (end) return fail(end.seq, end.eventId, end.problem);
    const tail = checkpointsBefore(head.seq, verifier.position);
    if (tail) return tail;
    if (next < checkpoints.length) {
      const c = checkpoints[next];
      return fail(c.seq, head.eventId ?? '', `a signed checkpoint covers seq ${c.seq} but the chain ends at seq ${head.seq}: the records after seq ${head.seq} were removed and the chain head rewritten`);
    }
    const beyond = await db('audit_events').where('seq', '>', head.seq).orderBy('seq').first('seq', 'id');
    if (beyond) return fail(Number(beyond.seq), beyond.id, `record seq ${beyond.seq} (AuditEvent ${beyond.id}) is stored after the chain head (seq ${head.seq}): records were added outside the chain`);
    const stray = await db('audit_index').whereNotIn('seq', db('audit_events').select('seq')).orderBy('seq').first('seq', 'kind', 'value');
    if (stray) return fail(Number(stray.seq), '', `the search index has a row (${stray.kind}=${stray.value}) for seq ${stray.seq}, which is not in the trail: the index was changed`);
    return { ok: true, records, checkpoints: checkpoints.length };
  }

  // --- retention ---

  async function purge(before: Date, records: (result: PurgeResult) => AuditEvent[] = () => []): Promise<PurgeResult> {
    const cutoff = before.getTime();
    if (!Number.isFinite(cutoff)) throw new TypeError('purge: not a date');
    const checked = await verify();
    // The signer may read the database; with SQLite's single connection it cannot inside the transaction.
    await options.prepare?.();
    if (!checked.ok) throw new Error(`refusing to purge: the audit chain does not verify at seq ${checked.seq} (AuditEvent ${checked.eventId}): ${checked.problem}`);
    // The purge and its records commit together or not at all (AuditWriteError: nothing was removed).
    return changeWithRecords(db, async (trx): Promise<PurgeResult> => {
      await lockHead(transactionStatements(trx)); // one purge at a time (and not across an append)
      if (isPg(trx)) await trx.raw('LOCK TABLE privacy_holds IN SHARE MODE');
      const last = await trx('audit_events').where('recorded_at', '<', cutoff).orderBy('seq', 'desc').first('seq', 'hash');
      if (!last) return { removed: 0, kept: 0 };
      const previous = await trx('audit_purges').orderBy([{ column: 'anchor_seq', order: 'desc' }, { column: 'id', order: 'desc' }]).first('anchor_seq', 'anchor_hash');
      // Below an earlier anchor only kept records remain; their hash columns are not chain-verified.
      const anchor: ChainPoint = previous && Number(previous.anchor_seq) >= Number(last.seq)
        ? { seq: Number(previous.anchor_seq), hash: previous.anchor_hash }
        : { seq: Number(last.seq), hash: last.hash };

      const heldSeqs = trx('audit_index').select('seq').whereIn('kind', ['agent', 'entity'])
        .whereIn('value', trx('privacy_holds').select(trx.raw('? || patient_id', ['Patient/'])));
      // (patient_id IS NOT NULL: a NULL in NOT (... IN ...) would keep every record without a patient.)
      const held = (q: Knex.QueryBuilder) => q
        .where((p) => p.whereNotNull('patient_id').whereIn('patient_id', trx('privacy_holds').select('patient_id')))
        .orWhereIn('seq', heldSeqs);
      const keepRows: { seq: number | string; id: string; event_hash: string }[] = await trx('audit_events')
        .where('seq', '<=', anchor.seq).andWhere((q) => q.where('recorded_at', '>=', cutoff).orWhere(held))
        .orderBy('seq').select('seq', 'id', 'event_hash');
      const keep = keepRows.map((r): [number, string, string] => [Number(r.seq), r.id, r.event_hash]);
      const removable = () => trx('audit_events').where('seq', '<=', anchor.seq).andWhere('recorded_at', '<', cutoff).whereNot(held);
      const removed = Number((await removable().count({ n: '*' }).first())?.n ?? 0);

      const checkpointRow = await signCheckpoint(trx, anchor);
      const at = now();
      const payload: PurgePayload = { purge: { before: before.toISOString(), anchor, removed, kept: keep }, iat: Math.floor(at.getTime() / 1000) };
      const jws = await options.sign(payload);
      await removable().delete();
      await trx('audit_index').where('seq', '<=', anchor.seq).whereNotIn('seq', trx('audit_events').select('seq').where('seq', '<=', anchor.seq)).delete();
      const keptOld = Number((await trx('audit_events').where('recorded_at', '<', cutoff).count({ n: '*' }).first())?.n ?? 0);
      await trx('audit_purges').insert({
        anchor_seq: anchor.seq, anchor_hash: anchor.hash, checkpoint_id: checkpointRow.id, before_at: cutoff,
        removed, kept: keptOld, jws, created_at: at.getTime(),
      });
      lastCheckpointSeq = Math.max(lastCheckpointSeq ?? 0, anchor.seq);
      return { removed, kept: keptOld };
    }, records);
  }

  // --- search ---

  function matches(event: Record<string, unknown>, filter: AuditSearch): boolean {
    if (filter.id !== undefined && event.id !== filter.id) return false;
    const patient = patientOf(event);
    if (filter.patient !== undefined && (patient === null || !anyOf(filter.patient).includes(patient))) return false;
    if (filter.agent !== undefined && !agentValues(event).some((v) => isAnyOf(v, filter.agent!))) return false;
    if (filter.entity !== undefined && !entityValues(event).some((v) => isAnyOf(v, filter.entity!))) return false;
    if (filter.type !== undefined && !isAnyOf((event.type as { code?: unknown } | undefined)?.code, filter.type)) return false;
    if (filter.subtype !== undefined && !subtypeCodes(event).some((v) => isAnyOf(v, filter.subtype!))) return false;
    if (filter.outcome !== undefined && !isAnyOf(event.outcome, filter.outcome)) return false;
    return true;
  }

  /** The events that match, in chain order, read in batches of `batch()` rows (index terms are cut: matches() decides). */
  async function* matching(filter: AuditSearch, batch: () => number): AsyncGenerator<AuditEvent> {
    const term = (kind: string, values: string | readonly string[]) =>
      db('audit_index').select('seq').where('kind', kind).whereIn('value', anyOf(values).map((v) => cut(v, MAX_TERM)));
    for (let after = 0; ;) {
      const query = db('audit_events').where('seq', '>', after).orderBy('seq').limit(batch()).select('seq', 'event');
      if (filter.id !== undefined) query.where('id', filter.id);
      if (filter.patient !== undefined) query.whereIn('patient_id', anyOf(filter.patient).map((p) => cut(p, 64)));
      if (filter.from) query.where('recorded_at', '>=', filter.from.getTime());
      if (filter.to) query.where('recorded_at', '<=', filter.to.getTime());
      if (filter.type !== undefined) query.whereIn('type_code', anyOf(filter.type).map((t) => cut(t, 64)));
      if (filter.outcome !== undefined) query.whereIn('outcome', anyOf(filter.outcome).map((o) => cut(o, 8)));
      if (filter.subtype !== undefined) query.whereIn('seq', term('subtype', filter.subtype));
      if (filter.agent !== undefined) query.whereIn('seq', term('agent', filter.agent));
      if (filter.entity !== undefined) query.whereIn('seq', term('entity', filter.entity));
      const rows: { seq: number | string; event: string }[] = await query;
      if (rows.length === 0) return;
      for (const row of rows) {
        const event = JSON.parse(row.event) as AuditEvent;
        if (matches(event, filter)) yield event;
      }
      after = Number(rows[rows.length - 1].seq);
    }
  }

  async function search(filter: AuditSearch): Promise<AuditEvent[]> {
    const limit = filter.limit ?? Infinity;
    const found: AuditEvent[] = [];
    if (limit <= 0) return found;
    let skip = filter.offset ?? 0;
    for await (const event of matching(filter, () => Math.min(BATCH, Math.max(limit - found.length + skip, 50)))) {
      if (skip > 0) skip--;
      else found.push(event);
      if (found.length >= limit) break;
    }
    return found;
  }

  async function count(filter: AuditSearch): Promise<number> {
    let n = 0;
    for await (const _event of matching(filter, () => BATCH)) n++;
    return n;
  }

  // --- the accounting of disclosures ---

  function disclosuresOf(query: DisclosureQuery): Knex.QueryBuilder {
    const q = db('audit_events').where('patient_id', cut(query.patient, 64)).whereNotNull('disclosure_app');
    if (query.from) q.where('recorded_at', '>=', query.from.getTime());
    if (query.to) q.where('recorded_at', '<=', query.to.getTime());
    if (query.app !== undefined) q.where('disclosure_app', cut(query.app, MAX_TERM));
    if (query.exceptApps?.length) q.whereNotIn('disclosure_app', query.exceptApps.map((a) => cut(a, MAX_TERM)));
    return q;
  }
  const parsed = (rows: { event: string }[]) => rows.map((r) => JSON.parse(r.event) as AuditEvent);

  async function disclosurePage(query: DisclosureQuery & { before?: number; after?: number; limit: number }): Promise<DisclosurePage> {
    const limit = Math.max(1, Math.min(query.limit, 1000));
    type Row = { seq: number | string; event: string };
    let rows: Row[];
    let more: boolean;
    if (query.after !== undefined) {
      const up: Row[] = await disclosuresOf(query).where('seq', '>', query.after).orderBy('seq', 'asc').limit(limit + 1).select('seq', 'event');
      more = up.length > limit;
      rows = up.slice(0, limit).reverse();
    } else {
      const q = disclosuresOf(query).orderBy('seq', 'desc').limit(limit + 1).select('seq', 'event');
      if (query.before !== undefined) q.where('seq', '<', query.before);
      const down: Row[] = await q;
      more = down.length > limit;
      rows = down.slice(0, limit);
    }
    if (!rows.length) return { events: [] };
    const [newest, oldest] = [Number(rows[0].seq), Number(rows[rows.length - 1].seq)];
    const exists = async (q: Knex.QueryBuilder) => Boolean(await q.first('seq'));
    const older = query.after !== undefined ? await exists(disclosuresOf(query).where('seq', '<', oldest)) : more;
    const newer = query.after !== undefined ? more : await exists(disclosuresOf(query).where('seq', '>', newest));
    return { events: parsed(rows), ...(older && { older: oldest }), ...(newer && { newer: newest }) };
  }

  async function disclosureSummary(query: DisclosureQuery): Promise<DisclosureSummaryRow[]> {
    const rows: { app: string; n: number | string; first: number | string; last: number | string }[] = await disclosuresOf(query)
      .groupBy('disclosure_app').orderBy('disclosure_app')
      .select({ app: 'disclosure_app' }).count({ n: '*' }).min({ first: 'recorded_at' }).max({ last: 'recorded_at' });
    return rows.map((r) => ({ app: r.app, count: Number(r.n), first: new Date(Number(r.first)), last: new Date(Number(r.last)) }));
  }

  async function* disclosureEvents(query: DisclosureQuery): AsyncIterable<AuditEvent> {
    for (let after = 0; ;) {
      const rows: { seq: number | string; event: string }[] = await disclosuresOf(query).where('seq', '>', after).orderBy('seq').limit(BATCH).select('seq', 'event');
      if (!rows.length) return;
      yield* parsed(rows);
      after = Number(rows[rows.length - 1].seq);
    }
  }

  // --- privacy holds ---

  async function hold(patient: string, reason: string): Promise<void> {
    if (!patient) throw new TypeError('hold: no patient');
    await db('privacy_holds').insert({ patient_id: patient, reason, since: now().getTime() }).onConflict('patient_id').merge(['reason']);
  }

  async function release(patient: string): Promise<boolean> {
    return (await db('privacy_holds').where('patient_id', patient).delete()) > 0;
  }

  async function holds(): Promise<{ patient: string; reason: string; since: Date }[]> {
    const rows: { patient_id: string; reason: string; since: number | string }[] = await db('privacy_holds').orderBy('patient_id').select('patient_id', 'reason', 'since');
    return rows.map((r) => ({ patient: r.patient_id, reason: r.reason, since: new Date(Number(r.since)) }));
  }

  async function close(): Promise<void> {
    closed = true;
    await writer.idle();
    clearTimeout(headTimer);
    headTimer = undefined;
    while (checkpointing) await checkpointing;
    closing = true; // the head at shutdown is signed whatever its age
    if (latest.seq > 0) await signLatest();
    writer.listeners.delete(onBatch);
  }

  return { append, search, count, disclosurePage, disclosureSummary, disclosureEvents, verify, checkpoint, purge, hold, release, holds, close };
}
