import type { Knex } from 'knex';

export async function up(db: Knex): Promise<void> {
  // The user an EHR launch is for (users.id): only they can sign in with it. Null: any user who may open the
  // patient (a backend's launch naming nobody, and every launch made before this column existed).
  await db.schema.alterTable('ehr_launches', (t) => {
    t.string('user_id', 64);
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.alterTable('ehr_launches', (t) => {
    t.dropColumn('user_id');
  });
}
