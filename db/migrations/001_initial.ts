import type { Knex } from 'knex';

export async function up(db: Knex): Promise<void> {
  // node-oidc-provider's models (sessions, interactions, grants, codes, refresh tokens,
  // clients, replay-detection jtis, ...): one generic table, payloads as JSON.
  await db.schema.createTable('oidc_payloads', (t) => {
    t.string('model', 64).notNullable();
    t.string('id', 255).notNullable();
    t.text('payload').notNullable();
    t.string('grant_id', 255).index();
    t.string('uid', 255).index();
    t.string('user_code', 255).index();
    t.string('account_id', 255).index(); // Grants: whose they are (the apps a user granted)
    t.string('client_id', 255).index(); // Grants: which app they are for (ended when the app is removed)
    t.bigInteger('expires_at').index();
    t.bigInteger('consumed_at');
    t.primary(['model', 'id']);
  });

  // Access tokens are JWTs that are not stored: revoking one puts its jti here until it expires.
  await db.schema.createTable('revoked_tokens', (t) => {
    t.string('jti', 255).primary();
    t.bigInteger('expires_at').notNullable().index();
  });

  // Which grant an access token came from, so revoking the grant makes its access tokens inactive.
  await db.schema.createTable('token_grants', (t) => {
    t.string('jti', 255).primary();
    t.string('grant_id', 255).notNullable().index();
    t.bigInteger('expires_at').notNullable().index();
  });

  await db.schema.createTable('users', (t) => {
    t.string('id', 64).primary();
    t.string('username', 255).notNullable().unique();
    t.text('password_hash').notNullable();
    t.string('name', 255);
    t.string('fhir_user', 255);
    t.text('attributes').notNullable().defaultTo('{}');
    t.boolean('disabled').notNullable().defaultTo(false);
    t.bigInteger('created_at').notNullable();
  });

  await db.schema.createTable('signing_keys', (t) => {
    t.string('kid', 64).primary();
    t.string('alg', 16).notNullable();
    t.text('private_jwk').notNullable(); // encrypted: see server/oidc/keys.ts
    t.bigInteger('created_at').notNullable();
    t.bigInteger('activates_at').notNullable();
    t.bigInteger('retired_at');
  });

  // What one grant is about: the SMART launch context (token response and token claims) and the
  // purpose of use chosen at consent, with the reason when it is an emergency (break-the-glass) access.
  await db.schema.createTable('grant_contexts', (t) => {
    t.string('grant_id', 255).primary();
    t.text('launch').notNullable();
    t.string('purpose_of_use', 32);
    t.text('emergency_reason');
    t.bigInteger('expires_at').notNullable().index();
  });

  // The audit trail: FHIR AuditEvents, appended in order, never updated.
  await db.schema.createTable('audit_events', (t) => {
    t.increments('seq').primary();
    t.string('id', 64).notNullable().unique();
    t.bigInteger('recorded_at').notNullable().index();
    t.string('type_code', 64).notNullable();
    t.string('subtype_code', 64);
    t.string('patient_id', 64).index();
    t.text('event').notNullable();
  });

  // EHR launch ids: opaque, single use, short lived.
  await db.schema.createTable('ehr_launches', (t) => {
    t.string('id', 64).primary();
    t.string('patient', 64).notNullable();
    t.string('encounter', 64);
    t.string('client_id', 255);
    t.text('fhir_context');
    t.bigInteger('expires_at').notNullable();
    t.bigInteger('consumed_at');
  });
}

export async function down(db: Knex): Promise<void> {
  for (const table of ['audit_events', 'token_grants', 'revoked_tokens', 'ehr_launches', 'grant_contexts', 'signing_keys', 'users', 'oidc_payloads']) {
    await db.schema.dropTableIfExists(table);
  }
}
