// A bench-only FHIR server: the guard in front of the bundled store on a SQLite file, with the audit
// trail on or off (AUDIT=on|off). It signs one system/*.rs token with a key of its own and prints it.
//   PORT=… DATABASE_URL=sqlite:… AUDIT=on node --import tsx scripts/bench/audited-server.ts
import Koa from 'koa';
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { migrate, openDatabase } from '../../server/db.ts';
import { createDbStore, seedDemoResources } from '../../server/fhir/store-db.ts';
import { storeUpstream } from '../../server/fhir/server.ts';
import { smartGuard } from '../../server/resource-server/koa.ts';
import { createGuardVerifier } from '../../server/resource-server/verify-token.ts';
import { createAuditStore } from '../../server/audit/audit-store.ts';
import { accessAuditEvents } from '../../server/audit/balp.ts';
import { accessAuditFrom } from '../../server/audit/access.ts';

const port = Number(process.env.PORT);
const base = `http://127.0.0.1:${port}/fhir`;
const issuer = 'https://bench-issuer.example';
const db = openDatabase(String(process.env.DATABASE_URL));
await migrate(db);
await seedDemoResources(db);

const { publicKey, privateKey } = await generateKeyPair('ES256');
const keys = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid: 'bench', alg: 'ES256' }] });
const now = Math.floor(Date.now() / 1000);
const token = await new SignJWT({ iss: issuer, aud: base, sub: 'bench-client', client_id: 'bench-client', scope: 'system/*.rs', jti: 'bench', iat: now, exp: now + 3600 })
  .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'bench' }).sign(privateKey);

const sign = async (payload: object) => JSON.stringify(payload);
const audit = process.env.AUDIT === 'on' ? createAuditStore(db, { sign, verify: async (jws) => JSON.parse(jws) }) : undefined;

const app = new Koa();
app.use(smartGuard({
  base,
  // Its one token is signed here and nothing revokes it.
  verify: createGuardVerifier({ issuer, audience: base, mode: 'local', keys, revocation: 'unchecked' }),
  upstream: storeUpstream(createDbStore(db), base),
  upstreamBase: base,
  ...(audit && { audit: (record) => audit.append(accessAuditEvents(accessAuditFrom(record, base, new Date()))) }),
}));
app.listen(port, '127.0.0.1', () => console.log(`bench server listening (audit ${audit ? 'on' : 'off'}) token=${token}`));
