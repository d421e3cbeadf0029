import type { Knex } from 'knex';
import { indexColumns, indexTerms } from '../../server/audit/audit-store.ts';

// `audit verify` now re-derives every record's search columns (recorded_at, type_code, subtype_code,
// patient_id, outcome, and the new disclosure_app) and its audit_index rows from the hashed event.
// Records written by older code stored some of them differently (a missing subtype_code): derive them
// all once from the event.
export async function up(db: Knex): Promise<void> {
  // The app a disclosure went to (null: not a disclosure): the patient's report is paged, filtered and
  // summarised in the database by it.
  await db.schema.alterTable('audit_events', (t) => {
    t.string('disclosure_app', 255);
    t.index(['patient_id', 'seq'], 'audit_events_patient_seq');
  });
  for (let after = 0; ;) {
    const rows: { seq: number | string; event: string }[] = await db('audit_events').where('seq', '>', after).orderBy('seq').limit(500).select('seq', 'event');
    if (!rows.length) break;
    after = Number(rows[rows.length - 1].seq);
    for (const row of rows) {
      const event = JSON.parse(row.event) as Record<string, unknown>;
      const c = indexColumns(event);
      await db('audit_events').where('seq', row.seq).update({
        recorded_at: Number.isFinite(c.recordedAt) ? c.recordedAt : 0, type_code: c.typeCode, subtype_code: c.subtypeCode,
        patient_id: c.patientId, outcome: c.outcome, disclosure_app: c.disclosureApp,
      });
      await db('audit_index').where('seq', row.seq).delete();
      const terms = indexTerms(event).map(([kind, value]) => ({ seq: row.seq, kind, value }));
      if (terms.length) await db('audit_index').insert(terms);
    }
  }
}

export async function down(db: Knex): Promise<void> {
  await db.schema.alterTable('audit_events', (t) => {
    t.dropIndex(['patient_id', 'seq'], 'audit_events_patient_seq');
    t.dropColumn('disclosure_app');
  });
}
