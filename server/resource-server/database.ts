// What a guard that shares smart-auth's database (DATABASE_URL) takes from it: the tamper-evident audit
// chain, and the origins of the registered apps for CORS. The `@smart-auth/guard/database` entry point;
// it needs knex and the driver (sqlite3 or pg).
export { openDatabase } from '../db.ts';
export { databaseAudit, type DatabaseAudit } from '../audit/database-sink.ts';
export { registeredOrigins } from '../oidc/client-origins.ts';
