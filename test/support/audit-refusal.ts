// Makes the audit store refuse records with a database trigger: for tests of what fails closed.
import type { Db } from '../../server/db.ts';
import { isPg } from '../../server/db-statements.ts';

/** Makes `db` refuse every audit record (of type `typeCode` only, when given) until called with `refuse` false (which may be called again). */
export async function refuseAuditRecords(db: Db, refuse: boolean, typeCode?: string): Promise<void> {
  if (!isPg(db)) {
    const when = typeCode ? db.raw('WHEN NEW.type_code = ?', [typeCode]).toQuery() : '';
    await db.raw(refuse ? `CREATE TRIGGER refuse_records BEFORE INSERT ON audit_events ${when} BEGIN SELECT RAISE(ABORT, 'refused'); END` : 'DROP TRIGGER IF EXISTS refuse_records');
  } else if (refuse) {
    const test = typeCode ? db.raw('NEW.type_code = ?', [typeCode]).toQuery() : 'true';
    await db.raw(`CREATE FUNCTION refuse_records() RETURNS trigger AS $$ BEGIN IF ${test} THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql`);
    await db.raw('CREATE TRIGGER refuse_records BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_records()');
  } else {
    await db.raw('DROP TRIGGER IF EXISTS refuse_records ON audit_events');
    await db.raw('DROP FUNCTION IF EXISTS refuse_records()');
  }
}
