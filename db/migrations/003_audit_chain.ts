import type { Knex } from 'knex';
import { chainHash, eventHash, GENESIS_HASH } from '../../server/audit/chain.ts';
import { indexColumns, indexTerms } from '../../server/audit/audit-store.ts';

// The audit trail becomes a hash chain (server/audit/audit-store.ts, server/audit/chain.ts):
// every row holds SHA-256 of its RFC 8785 JSON (event_hash), the previous row's hash (prev_hash)
// and its own link hash = SHA-256(prev_hash ‖ event_hash). seq is assigned by the writer from the
// chain head (never by the database sequence), so seq has no gaps: a gap is a removed record.
export async function up(db: Knex): Promise<void> {
  await db.schema.alterTable('audit_events', (t) => {
    t.string('event_hash', 64);
    t.string('prev_hash', 64);
    t.string('hash', 64);
    t.string('outcome', 8);
    t.index(['patient_id', 'recorded_at'], 'audit_events_patient_recorded');
    t.index(['type_code', 'seq'], 'audit_events_type_seq');
  });

  // Search terms that an event may have several of: kind 'agent' (who.identifier.value and
  // who.reference), 'entity' (what.reference), 'subtype' (subtype[].code). Exact values, cut to 200
  // characters (the store re-checks matches on the event itself).
  await db.schema.createTable('audit_index', (t) => {
    t.integer('seq').notNullable();
    t.string('kind', 16).notNullable();
    t.string('value', 255).notNullable();
    t.index(['kind', 'value', 'seq'], 'audit_index_kind_value_seq');
    t.index(['seq'], 'audit_index_seq');
  });

  // The chain's end: one row (id 1). Every append transaction locks it first (SELECT ... FOR UPDATE on
  // PostgreSQL), which puts all writers of all instances in one order.
  await db.schema.createTable('audit_chain_head', (t) => {
    t.integer('id').primary();
    t.integer('seq').notNullable();
    t.string('hash', 64).notNullable();
    t.string('event_id', 64);
  });

  // Signed checkpoints: a JWS (the server's signing key) over { seq, hash, records, iat }.
  await db.schema.createTable('audit_checkpoints', (t) => {
    t.increments('id').primary();
    t.integer('seq').notNullable().index();
    t.string('hash', 64).notNullable();
    t.text('jws').notNullable();
    t.bigInteger('created_at').notNullable();
  });

  // Retention purges: the records up to anchor_seq were removed, except those listed (signed) in the
  // JWS as kept (privacy holds, or recorded after the cut-off); the rest of the chain links to anchor_hash,
  // which the checkpoint at the anchor signs.
  await db.schema.createTable('audit_purges', (t) => {
    t.increments('id').primary();
    t.integer('anchor_seq').notNullable().index();
    t.string('anchor_hash', 64).notNullable();
    t.integer('checkpoint_id').notNullable();
    t.bigInteger('before_at').notNullable();
    t.integer('removed').notNullable();
    t.integer('kept').notNullable();
    t.text('jws').notNullable();
    t.bigInteger('created_at').notNullable();
  });

  // Patients whose audit records no purge removes.
  await db.schema.createTable('privacy_holds', (t) => {
    t.string('patient_id', 64).primary();
    t.text('reason').notNullable();
    t.bigInteger('since').notNullable();
  });

  await backfill(db);
}

/** Chains the records written before this migration (renumbering seq without gaps, in seq order). */
async function backfill(db: Knex): Promise<void> {
  let prev = GENESIS_HASH;
  let expected = 0;
  let lastId: string | null = null;
  let after = 0;
  for (;;) {
    const rows: { seq: number; id: string; event: string }[] = await db('audit_events')
      .where('seq', '>', after).orderBy('seq').limit(500).select('seq', 'id', 'event');
    if (!rows.length) break;
    after = Number(rows[rows.length - 1].seq);
    for (const row of rows) {
      expected++;
      const event = JSON.parse(row.event) as Record<string, unknown>;
      const eh = eventHash(event);
      const hash = chainHash(prev, eh);
      await db('audit_events').where('seq', row.seq).update({
        seq: expected, event_hash: eh, prev_hash: prev, hash, outcome: indexColumns(event).outcome,
      });
      const terms = indexTerms(event).map(([kind, value]) => ({ seq: expected, kind, value }));
      if (terms.length) await db('audit_index').insert(terms);
      prev = hash;
      lastId = row.id;
    }
  }
  await db('audit_chain_head').insert({ id: 1, seq: expected, hash: prev, event_id: lastId });
}

export async function down(db: Knex): Promise<void> {
  for (const table of ['privacy_holds', 'audit_purges', 'audit_checkpoints', 'audit_chain_head', 'audit_index']) {
    await db.schema.dropTableIfExists(table);
  }
  await db.schema.alterTable('audit_events', (t) => {
    t.dropIndex(['patient_id', 'recorded_at'], 'audit_events_patient_recorded');
    t.dropIndex(['type_code', 'seq'], 'audit_events_type_seq');
    t.dropColumns('event_hash', 'prev_hash', 'hash', 'outcome');
  });
  // The chain assigned seq itself: let PostgreSQL's serial go on after the highest one again.
  if (db.client.config.client === 'pg') {
    await db.raw("select setval(pg_get_serial_sequence('audit_events', 'seq'), coalesce((select max(seq) from audit_events), 0) + 1, false)");
  }
}
