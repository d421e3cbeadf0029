import type { Knex } from 'knex';

export async function up(db: Knex): Promise<void> {
  // The session (user_sessions.id: a pending sign-in or an /account session) whose set-up an unconfirmed TOTP
  // secret is: only that set-up shows it and can confirm it. Null on confirmed factors, and on unconfirmed
  // secrets made before this column existed (never confirmed: their set-up shows a new one).
  await db.schema.alterTable('user_factors', (t) => {
    t.string('session_id', 64);
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.alterTable('user_factors', (t) => {
    t.dropColumn('session_id');
  });
}
