import type { Knex } from 'knex';

export async function up(db: Knex): Promise<void> {
  // The bundled demo FHIR store (server/fhir/store-db.ts): the current version of each
  // resource as JSON text. The primary key (type, id) also serves the store's only
  // query shapes: one resource, and all resources of a type in id order.
  await db.schema.createTable('fhir_resources', (t) => {
    t.string('type', 64).notNullable();
    t.string('id', 64).notNullable();
    t.integer('version_id').notNullable();
    t.string('last_updated', 40).notNullable();
    t.text('resource').notNullable();
    t.primary(['type', 'id']);
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.dropTableIfExists('fhir_resources');
}
