import type { Knex } from 'knex';

export async function up(db: Knex): Promise<void> {
  // The outbox of forwarding to an external audit repository is the chain itself: this row says how far
  // it has been sent, and which instance holds the lease to send (one sender among several instances).
  await db.schema.createTable('audit_forwarding', (t) => {
    t.integer('id').primary();
    t.integer('seq').notNullable();
    t.string('lease_owner', 64);
    t.bigInteger('lease_until');
    t.bigInteger('updated_at').notNullable();
  });
  await db('audit_forwarding').insert({ id: 1, seq: 0, updated_at: Date.now() });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.dropTableIfExists('audit_forwarding');
}
