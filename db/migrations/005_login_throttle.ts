import type { Knex } from 'knex';

export async function up(db: Knex): Promise<void> {
  // Login throttling shared by every instance (server/limits/login-throttle.ts): one row per throttled key,
  // `user:<username lowercased>` or `addr:<ip>`. Times are epoch seconds.
  await db.schema.createTable('login_failures', (t) => {
    t.string('throttle_key', 300).primary();
    t.integer('failures').notNullable();
    t.bigInteger('window_start').notNullable();
    t.bigInteger('locked_until');
    t.index(['window_start']);
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.dropTableIfExists('login_failures');
}
