// The authorization server's simple audit sink (break-the-glass alerts): appends to the same
// tamper-evident hash chain as the audit store (server/audit/audit-store.ts), sharing its group commit.
import type { Db } from '../db.ts';
import type { AuditEvent } from './types.ts';
import { appendToChain } from './audit-store.ts';

export interface AuditSink {
  /** Resolves once the event is durably stored; rejects when it cannot be (callers fail closed). */
  append(event: AuditEvent): Promise<void>;
}

/** A sink onto the chain in `db`. Prefer passing the AuditStore itself: `{ append: (e) => store.append([e]) }`. */
export function databaseAuditSink(db: Db): AuditSink {
  return { append: (event) => appendToChain(db, [event]) };
}

/** Stored events in chain order (a simple reader; the AuditStore's search() has every FHIR filter). */
export async function auditEvents(db: Db, filter: { type?: string; subtype?: string; patient?: string; outcome?: string } = {}): Promise<AuditEvent[]> {
  const query = db('audit_events').orderBy('seq');
  if (filter.type) query.where('type_code', filter.type);
  if (filter.subtype) query.whereIn('seq', db('audit_index').select('seq').where({ kind: 'subtype', value: filter.subtype }));
  if (filter.patient) query.where('patient_id', filter.patient);
  if (filter.outcome) query.where('outcome', filter.outcome);
  return (await query.select('event')).map((r: { event: string }) => JSON.parse(r.event) as AuditEvent);
}
