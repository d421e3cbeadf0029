// The baseline the token benchmarks are held to: bare node-oidc-provider, in its own process, with its
// in-memory adapter (with room for the minted codes) and the same algorithms smart-auth uses (ES384 private_key_jwt client assertions,
// ES256 JWT access tokens, PKCE S256), and nothing of smart-auth. It registers one client from
// CLIENT_JWK (a public JWK), mints CODES authorization codes with their grants, writes them as JSON to
// CODES_FILE, and prints "listening".
// With DURABLE_DATABASE_URL=sqlite:<file> it is the floor of a durable server on smart-auth's stack: each
// write of its state (the client assertion's jti, a code's consumption, a grant) is also committed as one
// row through smart-auth's group commit before the request goes on; it still reads from memory.
//   PORT=… CLIENT_JWK='{"kty":"EC",…}' CODES=3000 CODES_FILE=… node --import tsx scripts/bench/bare-provider.ts
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import Provider, { type AdapterPayload } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';
import { exportJWK, generateKeyPair } from 'jose';
import { randomUUID } from 'node:crypto';
import { openDatabase } from '../../server/db.ts';
import { commitInsert } from '../../server/group-commit.ts';
import { BENCH_CODE_VERIFIER, BENCH_REDIRECT_URI } from './codes.ts';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const resource = `${issuer}/fhir`;
const scope = 'system/Patient.rs patient/Patient.rs';
const OPAQUE = 'urn:bench:opaque';

async function signingKey(alg: 'ES256' | 'RS256') {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  return { ...(await exportJWK(privateKey)), alg, use: 'sig', kid: alg };
}

// oidc-provider's in-memory adapter keeps 1000 entries; the minted codes and grants need more.
const store = new LRU({ maxSize: 100_000 });

/** Commits one row per write, on the SQLite file of DURABLE_DATABASE_URL; nothing when it is not set. */
async function durableWrites(): Promise<(model: string, payload: unknown) => Promise<void>> {
  if (!process.env.DURABLE_DATABASE_URL) return async () => {};
  const db = openDatabase(process.env.DURABLE_DATABASE_URL);
  await db.schema.createTable('bench_floor', (t) => { t.string('id', 36).primary(); t.string('model', 32); t.text('payload'); });
  return (model, payload) => commitInsert(db, { table: 'bench_floor', row: { id: randomUUID(), model, payload: JSON.stringify(payload ?? null) } });
}
// Durable only once the codes are minted: their minting is not measured.
let commitWrite = async (_model: string, _payload: unknown) => {};

class Adapter extends MemoryAdapter {
  private readonly model: string;
  constructor(model: string) {
    super(model, store);
    this.model = model;
  }
  override async upsert(id: string, payload: AdapterPayload, expiresIn: number) {
    await super.upsert(id, payload, expiresIn);
    await commitWrite(this.model, payload);
  }
  override async consume(id: string) {
    await super.consume(id);
    await commitWrite(this.model, { consumed: id });
  }
  override async destroy(id: string) {
    await super.destroy(id);
    await commitWrite(this.model, { destroyed: id });
  }
}

const provider = new Provider(issuer, {
  adapter: Adapter,
  jwks: { keys: [await signingKey('ES256'), await signingKey('RS256')] },
  clients: [{
    client_id: 'bench',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES384',
    jwks: { keys: [JSON.parse(String(process.env.CLIENT_JWK))] },
    grant_types: ['client_credentials', 'authorization_code'],
    response_types: ['code'],
    redirect_uris: [BENCH_REDIRECT_URI],
  }, {
    // The introspection baseline: a client_secret_basic client introspecting opaque tokens issued to it.
    client_id: 'bench-rs',
    client_secret: 'bench-rs-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  }],
  scopes: ['openid', ...scope.split(' ')],
  pkce: { required: () => true },
  enabledJWA: { clientAuthSigningAlgValues: ['ES384'] },
  routes: { token: '/token', introspection: '/introspect' },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => oneOf ?? resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, requested) => requested === OPAQUE
        ? { scope, audience: OPAQUE, accessTokenFormat: 'opaque', accessTokenTTL: 3600 }
        : { scope, audience: resource, accessTokenFormat: 'jwt', accessTokenTTL: 3600, jwt: { sign: { alg: 'ES256' } } },
    },
  },
  ttl: { AccessToken: 3600, AuthorizationCode: 600, Grant: 3600, IdToken: 3600 },
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
});

// Codes minted as a finished login and consent would leave them.
const client = await provider.Client.find('bench');
if (!client) throw new Error('the bench client did not validate');
const codes: string[] = [];
for (let i = 0; i < Number(process.env.CODES ?? 0); i++) {
  const grant = new provider.Grant({ accountId: 'bench-user', clientId: 'bench' });
  grant.addOIDCScope('openid');
  grant.addResourceScope(resource, 'patient/Patient.rs');
  const grantId = await grant.save();
  codes.push(await new provider.AuthorizationCode({
    client, accountId: 'bench-user', grantId, scope: 'openid patient/Patient.rs', resource, redirectUri: BENCH_REDIRECT_URI,
    codeChallenge: BENCH_CODE_VERIFIER.challenge, codeChallengeMethod: 'S256', gty: 'authorization_code',
  }).save());
}
commitWrite = await durableWrites();
if (process.env.CODES_FILE) writeFileSync(process.env.CODES_FILE, JSON.stringify(codes));

createServer(provider.callback()).listen(port, '127.0.0.1', () => console.log(`bare oidc-provider listening on ${issuer}`));
