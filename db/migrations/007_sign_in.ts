import type { Knex } from 'knex';

export async function up(db: Knex): Promise<void> {
  // Second factors (server/auth/factors.ts): a TOTP secret (encrypted), a passkey (public key), or a
  // recovery code (hashed). `last_step`: the newest TOTP time step accepted, so no code counts twice.
  await db.schema.createTable('user_factors', (t) => {
    t.string('id', 64).primary();
    t.string('user_id', 64).notNullable().index();
    t.string('kind', 16).notNullable(); // totp | passkey | recovery
    t.text('secret'); // totp: encrypted secret; recovery: sha256 of the code
    t.string('credential_id', 1024).unique(); // passkey: base64url credential id
    t.text('public_key'); // passkey: base64url COSE public key
    t.bigInteger('counter');
    t.string('device_type', 32); // passkey: singleDevice | multiDevice
    t.text('transports');
    t.bigInteger('last_step');
    t.boolean('confirmed').notNullable().defaultTo(false);
    t.bigInteger('created_at').notNullable();
    t.bigInteger('used_at');
  });
  // Single-use WebAuthn challenges, shared by every instance.
  await db.schema.createTable('webauthn_challenges', (t) => {
    t.string('challenge', 128).primary();
    t.string('user_id', 64);
    t.bigInteger('expires_at').notNullable().index();
  });
  // Signed-in sessions of people, at /account (`kind` account, the cookie holds a token whose sha256 is
  // `token_hash`) and at the authorization server (`kind` sign-in, keyed by oidc-provider's session uid).
  // A session ends by its row being deleted; nothing else makes it valid. `kind` pending: an /account
  // sign-in between the password and the second factor (`step` says what comes next).
  await db.schema.createTable('user_sessions', (t) => {
    t.string('id', 64).primary();
    t.string('user_id', 64).notNullable().index();
    t.string('kind', 16).notNullable();
    t.string('token_hash', 64).unique();
    t.string('oidc_uid', 255).unique();
    t.string('amr', 64);
    t.string('step', 16);
    t.string('address', 64);
    t.string('user_agent', 256);
    t.bigInteger('created_at').notNullable();
    t.bigInteger('expires_at').notNullable().index();
  });
  // How a break-the-glass authorization was stepped up (amr values), for its token and its alert.
  await db.schema.alterTable('grant_contexts', (t) => {
    t.string('step_up_amr', 64);
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.alterTable('grant_contexts', (t) => {
    t.dropColumn('step_up_amr');
  });
  for (const table of ['user_sessions', 'webauthn_challenges', 'user_factors']) await db.schema.dropTableIfExists(table);
}
