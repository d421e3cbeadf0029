// Throughput of the token endpoint for SMART backend services (client_credentials with ES384
// private_key_jwt assertions, pre-signed so the driver's signing cost is excluded) and of token
// introspection, against the real server in its own process on a SQLite file.
// Baselines measured in the same run: a discovery GET (the HTTP floor) and, in process, a plain
// local JWT verification of the same access tokens.
//   node --import tsx scripts/bench/backend-and-introspection.ts [requests=3000] [connections=10]
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { loadConfig } from '../../server/config.ts';
import { migrate, openDatabase } from '../../server/db.ts';
import { addClient } from '../../server/oidc/clients.ts';
import { createToolProvider } from '../../server/oidc/provider-host.ts';
import { load, report, startServerProcess } from './lib.ts';

const total = Number(process.argv[2] ?? 3000);
const connections = Number(process.argv[3] ?? 10);
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const form = (data: Record<string, string>) => new URLSearchParams(data).toString();

const server = await startServerProcess();
try {
  // Register a backend service and a resource server in the server's database, as the CLI does.
  const config = loadConfig(server.env);
  const db = openDatabase(server.databaseUrl);
  await migrate(db);
  const provider = await createToolProvider(config, db);
  const { publicKey, privateKey } = await generateKeyPair('ES384', { extractable: true });
  const backend = await addClient(db, provider, {
    name: 'bench backend', redirectUris: [], grantTypes: ['client_credentials'], scope: 'system/Patient.rs system/Observation.rs',
    auth: { kind: 'jwks', jwks: { keys: [{ ...(await exportJWK(publicKey)), kid: 'bench', alg: 'ES384' }] } },
  });
  const rs = await addClient(db, provider, { name: 'bench resource server', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
  await db.destroy();
  const clientId = String(backend.client_id);

  const now = Math.floor(Date.now() / 1000);
  const assertion = () => new SignJWT({ iss: clientId, sub: clientId, aud: `${server.url}/token`, jti: randomUUID(), iat: now, exp: now + 280 })
    .setProtectedHeader({ alg: 'ES384', kid: 'bench', typ: 'JWT' }).sign(privateKey);
  const assertions = await Promise.all(Array.from({ length: total + 70 }, assertion));
  const tokenRequest = (i: number) => ({
    method: 'POST', path: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form({ grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: assertions[i] }),
  });

  await load(server.url, 50, 5, (i) => tokenRequest(total + i)); // warm-up with the spare assertions
  const floor = await load(server.url, total, connections, () => ({ method: 'GET', path: '/.well-known/smart-configuration' }));
  const tokens = await load(server.url, total, connections, tokenRequest);

  // Access tokens to introspect: a few distinct ones, cycled.
  const accessTokens: string[] = [];
  for (let i = 0; i < 20; i++) {
    const { body, headers } = tokenRequest(total + 50 + i);
    accessTokens.push((await (await fetch(`${server.url}/token`, { method: 'POST', headers, body })).json()).access_token);
  }
  const basic = `Basic ${Buffer.from(`${encodeURIComponent(String(rs.client_id))}:${encodeURIComponent(String(rs.client_secret))}`).toString('base64')}`;
  const introspections = await load(server.url, total, connections, (i) => ({
    method: 'POST', path: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic },
    body: form({ token: accessTokens[i % accessTokens.length] }),
  }));

  // In-process baseline: verifying the same tokens locally with the published keys.
  const keys = createLocalJWKSet(await (await fetch(`${server.url}/jwks`)).json());
  const verifyStart = performance.now();
  for (let i = 0; i < total; i++) await jwtVerify(accessTokens[i % accessTokens.length], keys, { issuer: server.url, typ: 'at+jwt' });
  const verifySeconds = (performance.now() - verifyStart) / 1000;

  console.log(`smart-auth backend services and introspection, Node ${process.version}, SQLite file, ${total} requests, ${connections} connections`);
  report('baseline: GET smart-configuration', floor);
  report('POST /token client_credentials (ES384 assertion)', tokens);
  report('POST /introspect (resource-server client, JWT)', introspections);
  console.log(`${'baseline: local jwtVerify of the same tokens (1 core)'.padEnd(52)} ${(total / verifySeconds).toFixed(0).padStart(6)} verifications/s  ${(verifySeconds * 1e6 / total).toFixed(0)} µs each`);
} finally {
  await server.stop();
}
