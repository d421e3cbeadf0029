// The tamper-evident audit store on SQLite (and PostgreSQL when reachable): group commit, search,
// tamper detection through direct SQL, signed checkpoints, retention purges with privacy holds, failing closed.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { CompactSign, compactVerify, generateKeyPair, type CryptoKey } from 'jose';
import { freshPostgresSchema, POSTGRES_URL } from '../support/postgres.ts';
import { decodeJwt } from '../support/oauth.ts';
import { migrate, openDatabase, type Db } from '../../server/db.ts';
import { migrations } from '../../db/migrations/index.ts';
import { AuditWriteError, createAuditStore, type AuditStoreOptions, type BatchInfo, type SignedHead } from '../../server/audit/audit-store.ts';
import { chainHash, eventHash } from '../../server/audit/chain.ts';
import { databaseAuditSink, auditEvents } from '../../server/audit/store.ts';
import type { AuditEvent, AuditStore } from '../../server/audit/types.ts';
import { checkpointSigner, ensureSigningKeys, rotateSigningKeys, type KeyPolicy } from '../../server/oidc/keys.ts';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const T0 = Date.UTC(2025, 0, 1);
const MINUTE = 60_000;

interface Ev {
  n: number;
  patient?: string;
  user?: string;
  client?: string;
  subtype?: string;
  type?: string;
  outcome?: string;
  resource?: string;
  at?: number;
}

function auditEvent(e: Ev): AuditEvent {
  return {
    resourceType: 'AuditEvent',
    id: `ev-${e.n}-${randomUUID().slice(0, 8)}`,
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: e.type ?? 'rest' },
    subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: e.subtype ?? 'read' }],
    action: 'R',
    recorded: new Date(e.at ?? T0 + e.n * MINUTE).toISOString(),
    outcome: e.outcome ?? '0',
    agent: [
      { type: { coding: [{ system: DCM, code: '110153' }] }, requestor: false, who: { reference: 'Device/fhir-rs' } },
      { type: { coding: [{ system: DCM, code: '110150' }] }, requestor: false, who: { identifier: { value: e.client ?? 'growth-app' } } },
      ...(e.user ? [{ requestor: true, who: { identifier: { system: 'https://auth.example.org', value: e.user } } }] : []),
    ],
    source: { observer: { reference: 'Device/fhir-rs' } },
    entity: [
      ...(e.patient ? [{ what: { reference: `Patient/${e.patient}` }, role: { code: '1' } }] : []),
      ...(e.resource ? [{ what: { reference: e.resource }, role: { code: '4' } }] : []),
    ],
  };
}

let key: { privateKey: CryptoKey; publicKey: CryptoKey };
let otherKey: { privateKey: CryptoKey; publicKey: CryptoKey };
const signWith = (privateKey: CryptoKey) => async (payload: object) =>
  new CompactSign(new TextEncoder().encode(JSON.stringify(payload))).setProtectedHeader({ alg: 'ES256', typ: 'audit-checkpoint+jwt' }).sign(privateKey);
const verifyWith = (publicKey: CryptoKey) => async (jws: string) => JSON.parse(new TextDecoder().decode((await compactVerify(jws, publicKey)).payload)) as object;

describe('audit store', () => {
  before(async () => {
    key = await generateKeyPair('ES256');
    otherKey = await generateKeyPair('ES256');
  });

  for (const dialect of ['sqlite', 'pg'] as const) {
    describe(dialect === 'sqlite' ? 'on SQLite' : 'on PostgreSQL', function () {
      let dir: string;
      let db: Db;
      let pg: Awaited<ReturnType<typeof freshPostgresSchema>>;
      let flushes: BatchInfo[];
      let store: AuditStore;
      let logged: unknown[];

      const open = (extra: Partial<AuditStoreOptions> = {}) =>
        createAuditStore(db, { sign: signWith(key.privateKey), verify: verifyWith(key.publicKey), onFlush: (b) => flushes.push(b), log: (_m, err) => logged.push(err), ...extra });

      before(async function () {
        if (dialect === 'pg' && !(await freshPostgresSchema('audit_test').then(async (probe) => { await probe?.drop(); return probe; }))) {
          console.log(`      (skipped: PostgreSQL is not reachable at ${POSTGRES_URL}; set TEST_POSTGRES_URL)`);
          this.skip();
        }
      });

      beforeEach(async () => {
        flushes = [];
        logged = [];
        if (dialect === 'sqlite') {
          dir = mkdtempSync(join(tmpdir(), 'audit-store-'));
          db = openDatabase(`sqlite:${join(dir, 'audit.sqlite')}`);
        } else {
          pg = await freshPostgresSchema('audit_test');
          db = openDatabase(pg!.url);
        }
        await migrate(db);
        store = open();
      });

      afterEach(async () => {
        await store.close().catch(() => undefined);
        await db.destroy();
        if (dialect === 'sqlite') rmSync(dir, { recursive: true, force: true });
        else await pg!.drop();
      });

      const ids = (events: AuditEvent[]) => events.map((e) => e.id);
      const row = async (seq: number) => db('audit_events').where({ seq }).first();

      it('appends and searches by each filter, in seq order', async () => {
        const events = [
          auditEvent({ n: 1, patient: 'p1', user: 'u-alice', resource: 'Observation/o1' }),
          auditEvent({ n: 2, patient: 'p2', user: 'u-bob', subtype: 'search-type', resource: 'Observation/o2' }),
          auditEvent({ n: 3, patient: 'p1', client: 'other-app', outcome: '8' }),
          auditEvent({ n: 4, type: '110113', subtype: '110127', user: 'u-alice' }),
          auditEvent({ n: 5, patient: 'p1', resource: 'Observation/o1', subtype: 'vread' }),
        ];
        await store.append(events.slice(0, 2));
        await store.append(events.slice(2));
        const [e1, e2, e3, e4, e5] = events;
        assert.deepEqual(ids(await store.search({})), ids(events));
        assert.deepEqual(await store.search({ patient: 'p1' }), [e1, e3, e5]);
        assert.deepEqual(ids(await store.search({ patient: 'p' })), []);
        assert.deepEqual(ids(await store.search({ from: new Date(T0 + 2 * MINUTE), to: new Date(T0 + 4 * MINUTE) })), ids([e2, e3, e4]));
        assert.deepEqual(ids(await store.search({ agent: 'u-alice' })), ids([e1, e4]));
        assert.deepEqual(ids(await store.search({ agent: 'other-app' })), ids([e3]));
        assert.deepEqual(ids(await store.search({ agent: 'Device/fhir-rs' })).length, 5);
        assert.deepEqual(ids(await store.search({ entity: 'Observation/o1' })), ids([e1, e5]));
        assert.deepEqual(ids(await store.search({ entity: 'Patient/p2' })), ids([e2]));
        assert.deepEqual(ids(await store.search({ type: '110113' })), ids([e4]));
        assert.deepEqual(ids(await store.search({ subtype: 'read' })), ids([e1, e3]));
        assert.deepEqual(ids(await store.search({ subtype: '110127' })), ids([e4]));
        assert.deepEqual(ids(await store.search({ outcome: '8' })), ids([e3]));
        assert.deepEqual(ids(await store.search({ patient: 'p1', entity: 'Observation/o1', subtype: 'vread', agent: 'growth-app', outcome: '0', type: 'rest' })), ids([e5]));
        assert.deepEqual(ids(await store.search({ patient: 'p1', limit: 2 })), ids([e1, e3]));
        assert.deepEqual(await store.search({ limit: 0 }), []);
        assert.equal(await store.count({ patient: 'p1', limit: 1, offset: 1 }), 3);
        assert.equal(await store.count({ subtype: 'read' }), 2);
      });

      it('matches long values exactly (index terms are cut, the event is re-checked)', async () => {
        const long = `Observation/${'x'.repeat(250)}`;
        const a = auditEvent({ n: 1, resource: `${long}a` });
        const b = auditEvent({ n: 2, resource: `${long}b` });
        await store.append([a, b]);
        assert.deepEqual(ids(await store.search({ entity: `${long}b` })), ids([b]));
      });

      it('ends 200 concurrent appends in one valid chain, batched by group commit', async () => {
        const events = Array.from({ length: 200 }, (_, n) => auditEvent({ n, patient: `p${n % 7}` }));
        await Promise.all(events.map((e) => store.append([e])));
        const written = flushes.reduce((n, b) => n + b.events, 0);
        assert.equal(written, 200);
        assert.ok(flushes.length < 20, `200 appends took ${flushes.length} transactions`);
        assert.ok(flushes.some((b) => b.appends > 1), 'some transaction carried several appends');
        const result = await store.verify();
        assert.deepEqual(result, { ok: true, records: 200, checkpoints: 0 });
        const seqs = (await db('audit_events').orderBy('seq').select('seq')).map((r) => Number(r.seq));
        assert.deepEqual(seqs, Array.from({ length: 200 }, (_, i) => i + 1));
        // Later appends keep batching while a write is in flight.
        flushes = [];
        const more = [];
        for (let i = 0; i < 50; i++) {
          more.push(store.append([auditEvent({ n: 1000 + i })]));
          await new Promise((r) => setImmediate(r));
        }
        await Promise.all(more);
        assert.ok(flushes.length < 50, `50 spread appends took ${flushes.length} transactions`);
        assert.equal((await store.verify()).ok, true);
      });

      it('keeps the events of one append together and in order', async () => {
        const a = [1, 2, 3].map((n) => auditEvent({ n }));
        const b = [4, 5].map((n) => auditEvent({ n }));
        await Promise.all([store.append(a), store.append(b)]);
        assert.deepEqual(ids(await store.search({})), ids([...a, ...b]));
      });

      it('refuses an append whose id is already stored, without failing the others', async () => {
        const first = auditEvent({ n: 1 });
        await store.append([first]);
        const other = auditEvent({ n: 2 });
        const results = await Promise.allSettled([store.append([{ ...first }]), store.append([other])]);
        assert.equal(results[0].status, 'rejected');
        assert.match(String((results[0] as PromiseRejectedResult).reason), /already in the audit trail/);
        assert.equal(results[1].status, 'fulfilled');
        await assert.rejects(store.append([{ resourceType: 'AuditEvent', id: 'not a valid id!' }]), /FHIR id/);
        assert.equal((await store.verify()).ok, true);
      });

      describe('finds tampering through direct SQL', () => {
        let events: AuditEvent[];
        beforeEach(async () => {
          events = Array.from({ length: 10 }, (_, n) => auditEvent({ n: n + 1, patient: 'p1' }));
          await store.append(events);
          assert.deepEqual(await store.verify(), { ok: true, records: 10, checkpoints: 0 });
        });

        it('a changed event', async () => {
          const changed = { ...JSON.parse((await row(4)).event), outcome: '12' };
          await db('audit_events').where({ seq: 4 }).update({ event: JSON.stringify(changed) });
          const result = await store.verify();
          assert.equal(result.ok, false);
          assert.equal(!result.ok && result.eventId, events[3].id);
          assert.equal(!result.ok && result.seq, 4);
          assert.match(!result.ok ? result.problem : '', /content was changed/);
        });

        it('a changed event with its hashes recomputed', async () => {
          const old = await row(4);
          const changed = { ...JSON.parse(old.event), outcome: '12' };
          const eh = eventHash(changed);
          await db('audit_events').where({ seq: 4 }).update({ event: JSON.stringify(changed), event_hash: eh, hash: chainHash(old.prev_hash, eh) });
          let result = await store.verify();
          assert.equal(!result.ok && result.eventId, events[3].id, 'its outcome column no longer follows from it');
          assert.match(!result.ok ? result.problem : '', /outcome column/);
          await db('audit_events').where({ seq: 4 }).update({ outcome: '12', disclosure_app: null });
          result = await store.verify();
          assert.equal(!result.ok && result.eventId, events[4].id, 'the next record no longer links');
        });

        it('a removed record in the middle', async () => {
          await db('audit_events').where({ seq: 6 }).delete();
          const result = await store.verify();
          assert.equal(!result.ok && result.seq, 7);
          assert.equal(!result.ok && result.eventId, events[6].id);
          assert.match(!result.ok ? result.problem : '', /seq 6 were removed/);
        });

        it('a removed last record', async () => {
          await db('audit_events').where({ seq: 10 }).delete();
          const result = await store.verify();
          assert.equal(!result.ok && result.seq, 10);
          assert.equal(!result.ok && result.eventId, events[9].id);
          assert.match(!result.ok ? result.problem : '', /removed/);
        });

        it('two swapped records', async () => {
          const [a, b] = [await row(3), await row(4)];
          const cols = (r: typeof a) => ({ id: r.id, event: r.event, event_hash: r.event_hash, prev_hash: r.prev_hash, hash: r.hash, recorded_at: r.recorded_at });
          await db.transaction(async (trx) => {
            await trx('audit_events').where({ seq: 3 }).update({ id: 'swap-tmp' });
            await trx('audit_events').where({ seq: 4 }).update(cols(a));
            await trx('audit_events').where({ seq: 3 }).update(cols(b));
          });
          const result = await store.verify();
          assert.equal(!result.ok && result.seq, 3);
          assert.equal(!result.ok && result.eventId, events[3].id);
          assert.match(!result.ok ? result.problem : '', /reordered/);
        });

        it('a record inserted into the chain', async () => {
          await db('audit_events').where('seq', '>', 5).orderBy('seq', 'desc').select('seq').then(async (rows) => {
            for (const r of rows) await db('audit_events').where({ seq: r.seq }).update({ seq: Number(r.seq) + 1 });
          });
          const forged = auditEvent({ n: 99, patient: 'p1' });
          const prev = (await row(5)).hash;
          const eh = eventHash(forged);
          await db('audit_events').insert({
            seq: 6, id: forged.id, recorded_at: Date.parse(String(forged.recorded)), type_code: 'rest', subtype_code: 'read', patient_id: 'p1', outcome: '0', disclosure_app: 'growth-app',
            event: JSON.stringify(forged), event_hash: eh, prev_hash: prev, hash: chainHash(prev, eh),
          });
          await db('audit_index').update({ seq: db.raw('seq + 1') }).where('seq', '>', 5);
          await db('audit_index').insert([['agent', 'Device/fhir-rs'], ['agent', 'growth-app'], ['entity', 'Patient/p1'], ['subtype', 'read']].map(([kind, value]) => ({ seq: 6, kind, value })));
          const result = await store.verify();
          assert.equal(!result.ok && result.eventId, events[5].id, 'the record after the insertion no longer links');
        });
      });

      describe('finds changed search columns and index rows (they decide searches, reports, holds and purges)', () => {
        let events: AuditEvent[];
        beforeEach(async () => {
          events = Array.from({ length: 10 }, (_, n) => auditEvent({ n: n + 1, patient: 'pat-1', user: `u-${n}` }));
          await store.append(events);
        });
        const failsAt = async (seq: number, problem: RegExp) => {
          const result = await store.verify();
          assert.equal(result.ok, false, 'verify fails');
          assert.equal(!result.ok && result.seq, seq);
          assert.match(!result.ok ? result.problem : '', problem);
          return result;
        };

        it('a patient moved to another patient in the column and the index', async () => {
          await db('audit_events').where({ seq: 4 }).update({ patient_id: 'pat-999' });
          await db('audit_index').where({ seq: 4, kind: 'entity', value: 'Patient/pat-1' }).update({ value: 'Patient/pat-999' });
          const result = await failsAt(4, /patient_id column \(pat-999\) differs from its stored event \(pat-1\)/);
          assert.equal(!result.ok && result.eventId, events[3].id);
          assert.equal((await store.search({ patient: 'pat-1' })).length, 9, 'the change hid it from searches: verify is what finds it');
        });

        for (const [column, value] of [['recorded_at', 0], ['outcome', '12'], ['type_code', '110113'], ['subtype_code', 'vread']] as const) {
          it(`a changed ${column}`, async () => {
            await db('audit_events').where({ seq: 7 }).update({ [column]: value });
            await failsAt(7, new RegExp(`${column} column`));
          });
        }

        it('a changed index row', async () => {
          await db('audit_index').where({ seq: 5, kind: 'agent', value: 'u-4' }).update({ value: 'u-other' });
          await failsAt(5, /search index lacks agent=u-4/);
        });

        it('a deleted index row', async () => {
          await db('audit_index').where({ seq: 2, kind: 'entity', value: 'Patient/pat-1' }).delete();
          const result = await failsAt(2, /search index lacks entity=Patient\/pat-1/);
          assert.equal(!result.ok && result.eventId, events[1].id);
        });

        it('an extra index row, for a record or for none', async () => {
          await db('audit_index').insert({ seq: 3, kind: 'entity', value: 'Patient/pat-2' });
          await failsAt(3, /rows its event does not give \(entity=Patient\/pat-2\)/);
          await db('audit_index').where({ seq: 3, value: 'Patient/pat-2' }).delete();
          await db('audit_index').insert({ seq: 77, kind: 'entity', value: 'Patient/pat-2' });
          await failsAt(77, /index has a row \(entity=Patient\/pat-2\) for seq 77, which is not in the trail/);
        });
      });

      describe('signed heads', () => {
        let heads: SignedHead[];
        const openWithHeads = (extra: Partial<AuditStoreOptions> = {}) => open({ onCheckpoint: (h) => heads.push(h), ...extra });
        beforeEach(async () => {
          heads = [];
          await store.close();
          store = openWithHeads({ headEveryMs: 100 });
        });
        /** Waits for the timer's first head, however late a loaded machine runs it (headEveryMs is 100). */
        async function firstHead(): Promise<void> {
          for (let waited = 0; !heads.length && waited < 10_000; waited += 20) await new Promise((r) => setTimeout(r, 20));
        }

        it('are signed within headEveryMs while records are written, and at close, and passed on', async () => {
          await store.append(Array.from({ length: 3 }, (_, n) => auditEvent({ n })));
          await firstHead();
          assert.deepEqual(heads.map((h) => h.seq), [3], 'the unsigned tail was signed after 100 ms');
          await store.append([auditEvent({ n: 4 })]);
          await store.close();
          assert.deepEqual(heads.map((h) => h.seq), [3, 4], 'and the head at shutdown');
          assert.deepEqual((await db('audit_checkpoints').orderBy('seq').select('seq', 'jws')).map((r) => [Number(r.seq), r.jws]), heads.map((h) => [h.seq, h.jws]));
          assert.equal(heads[1].hash, (await row(4)).hash);
          store = open();
          assert.deepEqual(await store.verify(heads[0].jws), { ok: true, records: 4, checkpoints: 3 }, 'the two stored and the one given');
        });

        it('find the newest records deleted and the head moved back', async () => {
          await store.append(Array.from({ length: 10 }, (_, n) => auditEvent({ n })));
          await firstHead();
          const five = await row(5);
          await db('audit_events').where('seq', '>', 5).delete();
          await db('audit_index').where('seq', '>', 5).delete();
          await db('audit_chain_head').update({ seq: 5, hash: five.hash, event_id: five.id });
          const result = await store.verify();
          assert.equal(!result.ok && result.seq, 10);
          assert.match(!result.ok ? result.problem : '', /covers seq 10 but the chain ends at seq 5/);
        });

        describe('with the checkpoints deleted too, only a head kept outside the database shows it', () => {
          let kept: SignedHead;
          beforeEach(async () => {
            await store.append(Array.from({ length: 20 }, (_, n) => auditEvent({ n, patient: 'pat-1' })));
            await firstHead();
            [kept] = heads;
            assert.equal(kept.seq, 20);
            await store.append(Array.from({ length: 5 }, (_, n) => auditEvent({ n: 20 + n, patient: 'pat-1' })));
            await store.close();
            store = open();
          });

          it('the newest records deleted', async () => {
            const fifteen = await row(15);
            await db('audit_events').where('seq', '>', 15).delete();
            await db('audit_index').where('seq', '>', 15).delete();
            await db('audit_checkpoints').delete();
            await db('audit_chain_head').update({ seq: 15, hash: fifteen.hash, event_id: fifteen.id });
            assert.equal((await store.verify()).ok, true, 'what an attacker with write access can hide from a verify without a kept head');
            const result = await store.verify(kept.jws);
            assert.equal(!result.ok && result.seq, 20);
            assert.match(!result.ok ? result.problem : '', /covers seq 20 but the chain ends at seq 15/);
          });

          it('a middle record rewritten and the chain after it re-hashed, without the key', async () => {
            const rows = await db('audit_events').orderBy('seq').select();
            let prev = rows[13].hash;
            for (const r of rows.slice(14)) {
              const event = JSON.parse(r.event);
              if (Number(r.seq) === 15) event.outcome = '12';
              const eh = eventHash(event);
              const hash = chainHash(prev, eh);
              await db('audit_events').where({ seq: r.seq }).update({ event: JSON.stringify(event), event_hash: eh, prev_hash: prev, hash, outcome: event.outcome, disclosure_app: event.outcome === '0' && r.patient_id ? 'growth-app' : null });
              prev = hash;
            }
            await db('audit_checkpoints').delete();
            await db('audit_chain_head').update({ hash: prev });
            assert.equal((await store.verify()).ok, true);
            const result = await store.verify(kept.jws);
            assert.equal(!result.ok && result.seq, 20);
            assert.equal(!result.ok && result.eventId, (await row(20)).id);
            assert.match(!result.ok ? result.problem : '', /differs from the one the signed checkpoint vouches for/);
          });

          it('a head not signed with the server\'s key is refused', async () => {
            const forged = await signWith(otherKey.privateKey)({ seq: 20, hash: kept.hash, records: 20, iat: 0 });
            const result = await store.verify(forged);
            assert.match(!result.ok ? result.problem : '', /signed head given does not verify/);
          });
        });
      });

      describe('checkpoints', () => {
        it('are written every N records, signed, and verify', async () => {
          await store.close();
          store = open({ checkpointEvery: 50 });
          for (let i = 0; i < 6; i++) await store.append(Array.from({ length: 20 }, (_, n) => auditEvent({ n: i * 20 + n })));
          await store.close(); // waits for the checkpoint in flight
          const rows = await db('audit_checkpoints').orderBy('seq').select('seq', 'jws');
          assert.deepEqual(rows.map((r) => Number(r.seq)), [60, 120]);
          const payload = await verifyWith(key.publicKey)(rows[0].jws) as Record<string, unknown>;
          assert.deepEqual(Object.keys(payload).sort(), ['hash', 'iat', 'records', 'seq']);
          assert.equal(payload.hash, (await row(60)).hash);
          store = open();
          await store.checkpoint();
          assert.deepEqual(await store.verify(), { ok: true, records: 120, checkpoints: 3 });
          assert.deepEqual(logged, []);
        });

        it('find a forged checkpoint', async () => {
          await store.append(Array.from({ length: 10 }, (_, n) => auditEvent({ n })));
          await store.checkpoint();
          const forged = await signWith(otherKey.privateKey)({ seq: 10, hash: (await row(10)).hash, records: 10, iat: 0 });
          await db('audit_checkpoints').update({ jws: forged });
          const result = await store.verify();
          assert.equal(!result.ok && result.seq, 10);
          assert.match(!result.ok ? result.problem : '', /checkpoint at seq 10 does not verify/);
        });

        it('find a chain rewritten from a changed record on (hashes recomputed, head moved)', async () => {
          const events = Array.from({ length: 10 }, (_, n) => auditEvent({ n }));
          await store.append(events);
          await store.checkpoint();
          const rows = await db('audit_events').orderBy('seq').select();
          let prev = rows[2].hash;
          for (const r of rows.slice(3)) {
            const event = JSON.parse(r.event);
            if (Number(r.seq) === 4) event.outcome = '12';
            const eh = eventHash(event);
            const hash = chainHash(prev, eh);
            await db('audit_events').where({ seq: r.seq }).update({ event: JSON.stringify(event), event_hash: eh, prev_hash: prev, hash, outcome: event.outcome, disclosure_app: event.outcome === '0' && r.patient_id ? 'growth-app' : null });
            prev = hash;
          }
          await db('audit_chain_head').update({ hash: prev });
          const result = await store.verify();
          assert.equal(!result.ok && result.seq, 10);
          assert.equal(!result.ok && result.eventId, events[9].id);
          assert.match(!result.ok ? result.problem : '', /differs from the one the signed checkpoint vouches for/);
        });

        it('find records removed at the end with the chain head rewritten', async () => {
          await store.append(Array.from({ length: 10 }, (_, n) => auditEvent({ n })));
          await store.checkpoint();
          const eight = await row(8);
          await db('audit_events').where('seq', '>', 8).delete();
          await db('audit_chain_head').update({ seq: 8, hash: eight.hash, event_id: eight.id });
          const result = await store.verify();
          assert.equal(!result.ok && result.seq, 10);
          assert.match(!result.ok ? result.problem : '', /checkpoint covers seq 10 but the chain ends at seq 8/);
        });

        it('do not fail appends when signing fails', async () => {
          await store.close();
          store = open({ checkpointEvery: 5, sign: async () => { throw new Error('HSM unavailable'); } });
          await store.append(Array.from({ length: 10 }, (_, n) => auditEvent({ n })));
          await store.close(); // tries again to sign the head at shutdown
          assert.equal(logged.length, 2);
          for (const err of logged) assert.match(String(err), /HSM unavailable/);
          store = open();
          assert.deepEqual(await store.verify(), { ok: true, records: 10, checkpoints: 0 });
        });
      });

      describe('purge and privacy holds', () => {
        let events: AuditEvent[];
        const DAY = 24 * 60 * MINUTE;
        beforeEach(async () => {
          // 30 events, one per day, patients p0..p2 in turn.
          events = Array.from({ length: 30 }, (_, n) => auditEvent({ n, patient: `p${n % 3}`, at: T0 + n * DAY }));
          await store.append(events);
        });

        it('removes old records, keeps held patients\' ones, and the chain still verifies', async () => {
          await store.hold('p1', 'litigation hold 2025-17');
          assert.deepEqual((await store.holds()).map((h) => [h.patient, h.reason]), [['p1', 'litigation hold 2025-17']]);
          const result = await store.purge(new Date(T0 + 15 * DAY)); // events 0..14 are older
          assert.deepEqual(result, { removed: 10, kept: 5 });
          const purgeRow = await db('audit_purges').first();
          const anchorCheckpoint = await db('audit_checkpoints').where({ id: purgeRow.checkpoint_id }).first();
          assert.equal(Number(anchorCheckpoint.seq), 15, 'the purge relies on a checkpoint at its anchor (event 14, seq 15)');
          assert.equal(Number(purgeRow.anchor_seq), 15);
          const remaining = ids(await store.search({}));
          assert.deepEqual(remaining, ids(events.filter((_, n) => n >= 15 || n % 3 === 1)));
          assert.deepEqual(ids(await store.search({ patient: 'p1', to: new Date(T0 + 14 * DAY) })), ids(events.filter((_, n) => n < 15 && n % 3 === 1)));
          assert.deepEqual(await store.verify(), { ok: true, records: 20, checkpoints: 1 });
          // Appends go on from the head.
          await store.append([auditEvent({ n: 100, patient: 'p0', at: T0 + 40 * DAY })]);
          assert.deepEqual(await store.verify(), { ok: true, records: 21, checkpoints: 1 });
        });

        it('still finds a changed record after the purge, above and below the anchor', async () => {
          await store.hold('p1', 'hold');
          await store.purge(new Date(T0 + 15 * DAY));
          const above = await row(20);
          await db('audit_events').where({ seq: 20 }).update({ event: above.event.replace('"outcome":"0"', '"outcome":"4"') });
          let result = await store.verify();
          assert.equal(!result.ok && result.eventId, events[19].id);
          await db('audit_events').where({ seq: 20 }).update({ event: above.event });
          assert.equal((await store.verify()).ok, true);

          const heldRow = await row(5); // events[4]: p1, kept
          await db('audit_events').where({ seq: 5 }).update({ event: heldRow.event.replace('"outcome":"0"', '"outcome":"4"') });
          result = await store.verify();
          assert.equal(!result.ok && result.eventId, events[4].id);
          assert.match(!result.ok ? result.problem : '', /changed/);
          await db('audit_events').where({ seq: 5 }).update({ event: heldRow.event });

          await db('audit_events').where({ seq: 5 }).delete();
          result = await store.verify();
          assert.equal(!result.ok && result.eventId, events[4].id);
          assert.match(!result.ok ? result.problem : '', /kept by the purge, was removed/);
        });

        it('finds a record removed right after the anchor, and a forged purge record', async () => {
          await store.purge(new Date(T0 + 15 * DAY));
          await db('audit_events').where({ seq: 16 }).delete();
          let result = await store.verify();
          assert.equal(!result.ok && result.eventId, events[16].id);
          await store.close();
          await db.destroy();
          db = dialect === 'sqlite' ? openDatabase(`sqlite:${join(dir, 'audit.sqlite')}`) : openDatabase(pg!.url);
          store = open();
          const forged = await signWith(otherKey.privateKey)({ purge: { anchor: { seq: 15, hash: 'x' }, kept: [], removed: 0, before: '' }, iat: 0 });
          await db('audit_purges').update({ jws: forged });
          result = await store.verify();
          assert.match(!result.ok ? result.problem : '', /purge record up to seq 15 does not verify/);
        });

        it('finds the purge record removed (the chain then starts with a gap)', async () => {
          await store.purge(new Date(T0 + 15 * DAY));
          await db('audit_purges').delete();
          const result = await store.verify();
          assert.equal(result.ok, false);
          assert.equal(!result.ok && result.eventId, events[15].id);
        });

        it('purges again after a release, from the previous anchor, and refuses to purge a broken chain', async () => {
          await store.hold('p1', 'hold');
          await store.hold('p2', 'hold');
          assert.deepEqual(await store.purge(new Date(T0 + 15 * DAY)), { removed: 5, kept: 10 });
          assert.equal(await store.release('p1'), true);
          assert.equal(await store.release('p1'), false);
          assert.deepEqual(await store.purge(new Date(T0 + 15 * DAY)), { removed: 5, kept: 5 });
          assert.deepEqual(await store.verify(), { ok: true, records: 20, checkpoints: 2 });
          assert.deepEqual(await store.purge(new Date(T0 + 20 * DAY)), { removed: 4, kept: 6 });
          assert.deepEqual(await store.verify(), { ok: true, records: 16, checkpoints: 3 });
          assert.deepEqual(await store.purge(new Date(T0)), { removed: 0, kept: 0 });

          await db('audit_events').where({ seq: 25 }).update({ event: (await row(25)).event.replace('"outcome":"0"', '"outcome":"4"') });
          await assert.rejects(store.purge(new Date(T0 + 26 * DAY)), /refusing to purge/);
        });

        it('can purge everything', async () => {
          assert.deepEqual(await store.purge(new Date(T0 + 100 * DAY)), { removed: 30, kept: 0 });
          assert.deepEqual(await store.verify(), { ok: true, records: 0, checkpoints: 1 });
          await store.append([auditEvent({ n: 1, at: T0 + 101 * DAY })]);
          assert.deepEqual(await store.verify(), { ok: true, records: 1, checkpoints: 1 });
        });
      });

      describe('fails closed', () => {
        it('rejects appends when the table is gone, and recovers nothing partially', async () => {
          await store.append([auditEvent({ n: 1 })]);
          await db.schema.renameTable('audit_index', 'audit_index_away');
          const results = await Promise.allSettled([1, 2, 3].map((n) => store.append([auditEvent({ n: n + 1 })])));
          assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected', 'rejected']);
          assert.ok((results[0] as PromiseRejectedResult).reason instanceof AuditWriteError);
          await db.schema.renameTable('audit_index_away', 'audit_index');
          assert.equal(Number((await db('audit_events').count({ n: '*' }).first())!.n), 1, 'the failed batch left nothing');
          await store.append([auditEvent({ n: 9 })]);
          assert.deepEqual(await store.verify(), { ok: true, records: 2, checkpoints: 0 });
        });

        it('rejects appends when the database is closed', async () => {
          const closedDb = dialect === 'sqlite' ? openDatabase(`sqlite:${join(dir, 'audit.sqlite')}`) : openDatabase(pg!.url);
          const other = createAuditStore(closedDb, { sign: signWith(key.privateKey), verify: verifyWith(key.publicKey) });
          await other.append([auditEvent({ n: 1 })]);
          await closedDb.destroy();
          await assert.rejects(other.append([auditEvent({ n: 2 })]), AuditWriteError);
        });

        it('writes what is queued on close, then refuses', async () => {
          const pending = [1, 2, 3].map((n) => store.append([auditEvent({ n })]));
          await store.close();
          await Promise.all(pending);
          await assert.rejects(store.append([auditEvent({ n: 4 })]), /closed/);
          assert.equal(Number((await db('audit_events').count({ n: '*' }).first())!.n), 3);
        });
      });

      it('takes the break-the-glass sink\'s events into the same chain', async () => {
        const sink = databaseAuditSink(db);
        await Promise.all([sink.append(auditEvent({ n: 1, type: '110113', subtype: '110127' })), store.append([auditEvent({ n: 2 })])]);
        assert.equal((await auditEvents(db, { subtype: '110127' })).length, 1);
        assert.deepEqual(await store.verify(), { ok: true, records: 2, checkpoints: 0 });
      });

      if (dialect === 'pg') {
        it('puts several instances in one writer order (one chain)', async () => {
          const instances = [db, openDatabase(pg!.url), openDatabase(pg!.url)];
          const stores = instances.map((d) => createAuditStore(d, { sign: signWith(key.privateKey), verify: verifyWith(key.publicKey), checkpointEvery: 100 }));
          const all: Promise<void>[] = [];
          for (let i = 0; i < 300; i++) all.push(stores[i % 3].append([auditEvent({ n: i })]));
          await Promise.all(all);
          for (const s of stores) await s.close();
          for (const d of instances.slice(1)) await d.destroy();
          const result = await store.verify();
          assert.equal(result.ok, true, JSON.stringify(result));
          assert.equal(result.ok && result.records, 300);
        });
      }
    });
  }

  it('signs and verifies checkpoints with the server\'s keys (checkpointSigner), across a key rotation', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'audit-keys-'));
    const db = openDatabase(`sqlite:${join(dir, 'audit.sqlite')}`);
    try {
      await migrate(db);
      const policy: KeyPolicy = { algs: ['ES256', 'RS256'], rotationDelay: 0, maxTokenLifetime: 0, encryptionSecret: 'an-encryption-secret-that-is-long-enough' };
      await ensureSigningKeys(db, policy);
      const store = createAuditStore(db, { ...checkpointSigner(db, policy), checkpointEvery: 5 });
      await store.append(Array.from({ length: 5 }, (_, n) => auditEvent({ n })));
      await store.close();
      const [first] = await db('audit_checkpoints').select('jws');
      assert.equal(decodeJwt(first.jws).header.alg, 'ES256');
      await rotateSigningKeys(db, policy); // the old keys expire at once (maxTokenLifetime 0)
      const again = createAuditStore(db, checkpointSigner(db, policy));
      await again.append([auditEvent({ n: 6 })]);
      await again.checkpoint();
      assert.deepEqual(await again.verify(), { ok: true, records: 6, checkpoints: 2 });
      await again.close();
    } finally {
      await db.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes as a signed head only a JWS of the checkpoint type, not another JWS of the same keys (an access token)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'audit-typ-'));
    const db = openDatabase(`sqlite:${join(dir, 'audit.sqlite')}`);
    try {
      await migrate(db);
      const policy: KeyPolicy = { algs: ['ES256'], rotationDelay: 0, maxTokenLifetime: 0, encryptionSecret: 'an-encryption-secret-that-is-long-enough' };
      await ensureSigningKeys(db, policy);
      const signer = checkpointSigner(db, policy);
      const store = createAuditStore(db, signer);
      await store.append([auditEvent({ n: 1 })]);
      await store.checkpoint();
      const head = await db('audit_chain_head').where('id', 1).first('seq', 'hash');
      const payload = { seq: Number(head.seq), hash: head.hash, records: Number(head.seq), iat: 0 };
      assert.equal((await store.verify(await signer.sign(payload))).ok, true);
      const result = await store.verify(await signer.sign(payload, 'at+jwt'));
      assert.equal(result.ok, false);
      assert.match(!result.ok ? result.problem : '', /does not verify/);
      await store.close();
    } finally {
      await db.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('chains the records written before the migration', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'audit-migrate-'));
    const db = openDatabase(`sqlite:${join(dir, 'audit.sqlite')}`);
    try {
      const source = (upTo: number) => ({
        getMigrations: async () => migrations.slice(0, upTo).map((m) => m.name),
        getMigrationName: (name: string) => name,
        getMigration: async (name: string) => migrations.find((m) => m.name === name)!,
      });
      await db.migrate.latest({ migrationSource: source(2) });
      const old = [1, 2, 3].map((n) => auditEvent({ n, patient: 'p1' }));
      for (const [i, e] of old.entries()) {
        await db('audit_events').insert({ seq: [1, 2, 5][i], id: e.id, recorded_at: Date.parse(String(e.recorded)), type_code: 'rest', patient_id: 'p1', event: JSON.stringify(e) });
      }
      await migrate(db);
      const store = createAuditStore(db, { sign: signWith(key.privateKey), verify: verifyWith(key.publicKey) });
      assert.deepEqual(await store.verify(), { ok: true, records: 3, checkpoints: 0 });
      const added = auditEvent({ n: 4, patient: 'p1' });
      await store.append([added]);
      assert.deepEqual(ids4(await store.search({ patient: 'p1', subtype: 'read' })), ids4([...old, added]));
      assert.deepEqual(await store.verify(), { ok: true, records: 4, checkpoints: 0 });
      await store.close();
    } finally {
      await db.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const ids4 = (events: AuditEvent[]) => events.map((e) => e.id);
