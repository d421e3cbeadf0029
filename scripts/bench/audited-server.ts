// A bench-only FHIR server on a SQLite file, one of:
//   AUDIT=off    the guard in front of the bundled store;
//   AUDIT=on     the same with the durable audit trail (each access chained and committed before its answer);
//   AUDIT=floor  the store with no guard, each answer waiting for one durable row of an access record's
//                size, committed through the group commit on the same driver: the least an audited read
//                can cost on the stack smart-auth is built on (nothing verified or decided, no AuditEvent
//                built, hashed or chained).
// It signs one system/*.rs token with a key of its own and prints it.
//   PORT=… DATABASE_URL=sqlite:… AUDIT=on node --import tsx scripts/bench/audited-server.ts
import { randomUUID } from 'node:crypto';
import Koa from 'koa';
import mount from 'koa-mount';
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { migrate, openDatabase, type Db } from '../../server/db.ts';
import { createDbStore, seedDemoResources } from '../../server/fhir/store-db.ts';
import { fhirServerRoutes, storeUpstream } from '../../server/fhir/server.ts';
import { smartGuard } from '../../server/resource-server/koa.ts';
import { createGuardVerifier } from '../../server/resource-server/verify-token.ts';
import { createAuditStore } from '../../server/audit/audit-store.ts';
import { accessAuditEvents } from '../../server/audit/balp.ts';
import { accessAuditFrom } from '../../server/audit/access.ts';
import { commitInsert } from '../../server/group-commit.ts';

const port = Number(process.env.PORT);
const base = `http://127.0.0.1:${port}/fhir`;
const issuer = 'https://bench-issuer.example';
const mode = String(process.env.AUDIT);
const db = openDatabase(String(process.env.DATABASE_URL));
await migrate(db);
await seedDemoResources(db);

async function floorApp(db: Db): Promise<Koa> {
  await db.schema.createTable('bench_floor', (t) => { t.string('id', 36).primary(); t.string('recorded_at', 32); t.text('event'); });
  // An access AuditEvent of the bundled /fhir, as stored, is about 2 KB of JSON.
  const event = JSON.stringify({ resourceType: 'AuditEvent', padding: 'x'.repeat(2000) });
  const app = new Koa();
  app.use(async (ctx, next) => {
    await next();
    await commitInsert(db, { table: 'bench_floor', row: { id: randomUUID(), recorded_at: new Date().toISOString(), event } });
  });
  app.use(mount('/fhir', fhirServerRoutes(createDbStore(db), { base }).routes()));
  return app;
}

async function guardApp(db: Db, token: { publicJwk: object }, audited: boolean): Promise<Koa> {
  const keys = createLocalJWKSet({ keys: [{ ...token.publicJwk, kid: 'bench', alg: 'ES256' }] });
  const sign = async (payload: object) => JSON.stringify(payload);
  const audit = audited ? createAuditStore(db, { sign, verify: async (jws) => JSON.parse(jws) }) : undefined;
  const app = new Koa();
  app.use(smartGuard({
    base,
    // Its one token is signed here and nothing revokes it.
    verify: createGuardVerifier({ issuer, audience: base, mode: 'local', keys, revocation: 'unchecked' }),
    upstream: storeUpstream(createDbStore(db), base),
    upstreamBase: base,
    audit: audit ? (record) => audit.append(accessAuditEvents(accessAuditFrom(record, base, new Date()))) : false,
  }));
  return app;
}

const { publicKey, privateKey } = await generateKeyPair('ES256');
const now = Math.floor(Date.now() / 1000);
const token = await new SignJWT({ iss: issuer, aud: base, sub: 'bench-client', client_id: 'bench-client', scope: 'system/*.rs', jti: 'bench', iat: now, exp: now + 3600 })
  .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'bench' }).sign(privateKey);
const app = mode === 'floor' ? await floorApp(db) : await guardApp(db, { publicJwk: await exportJWK(publicKey) }, mode === 'on');
app.listen(port, '127.0.0.1', () => console.log(`bench server listening (audit ${mode}) token=${token}`));
