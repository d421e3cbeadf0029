// The audit trail's store: append-only rows of FHIR AuditEvent JSON.
import type { Db } from '../db.ts';
import type { AuditEvent } from './types.ts';

export interface AuditSink {
  /** Resolves once the event is durably stored; rejects when it cannot be (callers fail closed). */
  append(event: AuditEvent): Promise<void>;
}

function patientOf(event: AuditEvent): string | null {
  const entities = (event.entity as { what?: { reference?: string }; role?: { code?: string } }[] | undefined) ?? [];
  const patient = entities.find((e) => e.role?.code === '1' && e.what?.reference?.startsWith('Patient/'));
  return patient?.what?.reference?.slice('Patient/'.length) ?? null;
}

export function databaseAuditSink(db: Db): AuditSink {
  return {
    async append(event) {
      await db('audit_events').insert({
        id: event.id,
        recorded_at: Date.parse(String(event.recorded)),
        type_code: (event.type as { code: string }).code,
        subtype_code: (event.subtype as { code: string }[] | undefined)?.[0]?.code ?? null,
        patient_id: patientOf(event),
        event: JSON.stringify(event),
      });
    },
  };
}

export async function auditEvents(db: Db, filter: { type?: string; subtype?: string; patient?: string } = {}): Promise<AuditEvent[]> {
  const query = db('audit_events').orderBy('seq');
  if (filter.type) query.where('type_code', filter.type);
  if (filter.subtype) query.where('subtype_code', filter.subtype);
  if (filter.patient) query.where('patient_id', filter.patient);
  return (await query.select('event')).map((r: { event: string }) => JSON.parse(r.event) as AuditEvent);
}
