// Throughput of the token endpoint for SMART backend services (client_credentials with ES384
// private_key_jwt assertions, pre-signed so the driver's signing cost is excluded) and of token
// introspection, against the real server in its own process on a SQLite file.
// Baselines measured in the same run: a discovery GET (the HTTP floor) and, in process, a plain
// local JWT verification of the same access tokens.
//   node --import tsx scripts/bench/backend-and-introspection.ts [requests=3000] [connections=10]
import { performance } from 'node:perf_hooks';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { load, registerBenchClients, report, startServerProcess } from './lib.ts';

const total = Number(process.argv[2] ?? 3000);
const connections = Number(process.argv[3] ?? 10);
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const form = (data: Record<string, string>) => new URLSearchParams(data).toString();

const server = await startServerProcess();
try {
  const clients = await registerBenchClients(server, 'system/Patient.rs system/Observation.rs');
  const assertions = await Promise.all(Array.from({ length: total + 70 }, clients.backend.assertion));
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
  const basic = `Basic ${Buffer.from(`${encodeURIComponent(clients.resourceServer.clientId)}:${encodeURIComponent(clients.resourceServer.clientSecret)}`).toString('base64')}`;
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
