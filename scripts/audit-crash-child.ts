// For test/integration/audit-crash.test.ts: appends AuditEvents as fast as it can (WORKERS concurrent
// loops) to the audit chain at DATABASE_URL, printing each event id on stdout only after its append
// resolved ("answered"). The test kills it with SIGKILL and checks that every printed id is stored.
// Env: DATABASE_URL (migrated already), AUDIT_CRASH_JWK (private ES256 JWK for checkpoints), WORKERS.
import { randomUUID } from 'node:crypto';
import { CompactSign, importJWK, type JWK } from 'jose';
import { openDatabase } from '../server/db.ts';
import { createAuditStore } from '../server/audit/audit-store.ts';
import type { AuditEvent } from '../server/audit/types.ts';

const db = openDatabase(process.env.DATABASE_URL!);
const privateKey = await importJWK(JSON.parse(process.env.AUDIT_CRASH_JWK!) as JWK, 'ES256');
const store = createAuditStore(db, {
  sign: async (payload) => new CompactSign(new TextEncoder().encode(JSON.stringify(payload))).setProtectedHeader({ alg: 'ES256' }).sign(privateKey),
  verify: async () => { throw new Error('the crash child does not verify'); },
  checkpointEvery: Number(process.env.CHECKPOINT_EVERY ?? 250),
});

const event = (n: number): AuditEvent => ({
  resourceType: 'AuditEvent',
  id: randomUUID(),
  type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
  subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: 'read' }],
  action: 'R',
  recorded: new Date().toISOString(),
  outcome: '0',
  agent: [{ requestor: false, who: { identifier: { value: `worker-${n}` } } }],
  entity: [{ what: { reference: `Patient/p-${n % 5}` }, role: { code: '1' } }],
});

process.stdout.write(`ready ${process.pid}\n`);
const workers = Number(process.env.WORKERS ?? 32);
await Promise.all(Array.from({ length: workers }, async (_, n) => {
  for (;;) {
    const e = event(n);
    await store.append([e]);
    // Synchronous on Linux pipes: once written, the id is the parent's, as an answer to a client would be.
    process.stdout.write(`${e.id}\n`);
  }
}));
