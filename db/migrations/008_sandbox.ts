import type { Knex } from 'knex';

export async function up(db: Knex): Promise<void> {
  // Demo-mode sandbox options of an EHR launch made at /launcher (server/sandbox.ts): who is signed in,
  // whether login and consent are skipped, and which failure is simulated.
  await db.schema.createTable('sandbox_launches', (t) => {
    t.string('launch_id', 64).primary();
    t.string('username', 64);
    t.boolean('skip_login').notNullable().defaultTo(false);
    t.boolean('skip_consent').notNullable().defaultTo(false);
    t.string('failure', 40);
    t.bigInteger('expires_at').notNullable();
  });
  // A failure simulated at the token endpoint or at /fhir follows the grant the launch became.
  await db.schema.alterTable('grant_contexts', (t) => {
    t.string('sandbox_failure', 40);
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.alterTable('grant_contexts', (t) => {
    t.dropColumn('sandbox_failure');
  });
  await db.schema.dropTableIfExists('sandbox_launches');
}
