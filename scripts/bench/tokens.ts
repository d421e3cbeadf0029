// The token endpoints against bare node-oidc-provider in the same run, each server in its own process:
//   - client_credentials with ES384 private_key_jwt assertions and ES256 JWT access tokens;
//   - authorization-code exchanges (PKCE S256, the same client authentication), codes minted beforehand;
//   - introspection of smart-auth's JWT access tokens by a resource server (client_secret_basic), against
//     bare oidc-provider introspecting its own opaque tokens for a client_secret_basic client;
//   - the floor of the two token rows: bare oidc-provider with each of its writes committed to a SQLite
//     file through smart-auth's group commit (scripts/bench/bare-provider.ts, DURABLE_DATABASE_URL).
// Client assertions are signed before each run, so the driver's signing cost is not measured.
//   node --import tsx scripts/bench/tokens.ts [requests=3000] [connections=10]
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../test/support/server.ts';
import { startScript } from '../../test/support/processes.ts';
import { assertionSigner, benchSeconds, isMain, statementCounter, load, warmUp, registerBenchClients, runBenches, startServerProcess, type Bench, type BenchRow, type LoadRequest } from './lib.ts';
import { BENCH_CODE_VERIFIER, BENCH_REDIRECT_URI, mintSmartAuthCodes } from './codes.ts';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const post = (path: string, data: Record<string, string>, headers: Record<string, string> = {}): LoadRequest =>
  ({ method: 'POST', path, headers: { ...FORM, ...headers }, body: new URLSearchParams(data).toString() });
const basic = (id: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}` });

/** The three token-endpoint measurements for one server. */
interface TokenTarget {
  url: string;
  pid: number;
  /** The server's SQL statement counter, when it has one. */
  statements?: () => Promise<number>;
  clientCredentials(i: number): LoadRequest;
  /** Codes expire within a minute: they are minted just before the exchanges are measured. */
  codeExchange(): Promise<(i: number) => LoadRequest>;
  introspection(i: number): LoadRequest;
}

const codeExchange = (codes: string[], assertions: string[]) => (i: number) => post('/token', {
  grant_type: 'authorization_code', code: codes[i], redirect_uri: BENCH_REDIRECT_URI, code_verifier: BENCH_CODE_VERIFIER.verifier,
  client_assertion_type: ASSERTION_TYPE, client_assertion: assertions[i],
});

async function presign(count: number, sign: () => Promise<string>): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push(await sign());
  return out;
}

async function accessTokens(url: string, requests: LoadRequest[]): Promise<string[]> {
  return Promise.all(requests.map(async (r) => {
    const body = await (await fetch(`${url}${r.path}`, { method: r.method, headers: r.headers, body: r.body })).json();
    if (!body.access_token) throw new Error(`no access token: ${JSON.stringify(body)}`);
    return body.access_token as string;
  }));
}

async function smartAuthTarget(total: number, stops: (() => Promise<void>)[]): Promise<TokenTarget> {
  const server = await startServerProcess();
  stops.push(() => server.stop());
  const clients = await registerBenchClients(server, 'system/Patient.rs');
  const backendAssertions = await presign(total, clients.backend.assertion);
  const appAssertions = await presign(total, clients.app.assertion);
  const clientCredentials = (assertion: string) => post('/token', { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion });
  const tokens = await accessTokens(server.url, await Promise.all(Array.from({ length: 20 }, async () => clientCredentials(await clients.backend.assertion()))));
  const rs = basic(clients.resourceServer.clientId, clients.resourceServer.clientSecret);
  return {
    url: server.url,
    pid: server.pid,
    statements: statementCounter(server.url),
    clientCredentials: (i) => clientCredentials(backendAssertions[i]),
    codeExchange: async () => codeExchange(await mintSmartAuthCodes(server, clients.app.clientId, total), appAssertions),
    introspection: (i) => post('/introspect', { token: tokens[i % tokens.length] }, rs),
  };
}

async function bareProviderTarget(total: number, stops: (() => Promise<void>)[], env: Record<string, string> = {}): Promise<TokenTarget> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const signer = await assertionSigner(`${url}/token`);
  const codesFile = join(mkdtempSync(join(tmpdir(), 'smart-auth-bench-codes-')), 'codes.json');
  const bare = await startScript('scripts/bench/bare-provider.ts', {
    PORT: String(port), CLIENT_JWK: JSON.stringify(signer.publicJwk), CODES: String(total), CODES_FILE: codesFile, ...env,
  }, /listening/);
  stops.push(() => bare.stop());
  const codes = JSON.parse(readFileSync(codesFile, 'utf8')) as string[];
  const ccAssertions = await presign(total, () => signer.assertion('bench'));
  const codeAssertions = await presign(total, () => signer.assertion('bench'));
  const rs = basic('bench-rs', 'bench-rs-secret');
  const tokens = await accessTokens(url, Array.from({ length: 20 }, () => post('/token', { grant_type: 'client_credentials', resource: 'urn:bench:opaque' }, rs)));
  return {
    url,
    pid: bare.pid,
    clientCredentials: (i) => post('/token', { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: ASSERTION_TYPE, client_assertion: ccAssertions[i] }),
    codeExchange: async () => codeExchange(codes, codeAssertions),
    introspection: (i) => post('/introspect', { token: tokens[i % tokens.length] }, rs),
  };
}

export const benchTokens: Bench = async (total, connections) => {
  const stops: (() => Promise<void>)[] = [];
  // Client assertions and codes are used up, so their warm-up is a count; introspection warms up for a time (warmUp).
  const warm = Math.min(1500, total);
  // The driver builds one spare request per connection for each run (see load).
  const spare = connections;
  const smartAuth = await smartAuthTarget(total + warm + 2 * spare, stops);
  const bare = await bareProviderTarget(total + warm + 2 * spare, stops);
  const floor = await bareProviderTarget(total + warm + 2 * spare, stops, {
    DURABLE_DATABASE_URL: `sqlite:${join(mkdtempSync(join(tmpdir(), 'smart-auth-bench-floor-')), 'floor.sqlite')}`,
  });
  const measure = async (target: TokenTarget, request: (i: number) => LoadRequest, reusable: boolean) => {
    if (reusable) await warmUp(target.url, connections, request);
    else await load(target.url, { requests: warm }, connections, (i) => request(total + spare + i));
    // Client assertions and codes are used up: those rows send the `total` requests built for them.
    return load(target.url, reusable ? { seconds: benchSeconds() } : { requests: total }, connections, request, target.pid, target.statements);
  };
  const rows: BenchRow[] = [];
  for (const [name, pick, reusable] of [
    ['client_credentials (ES384 private_key_jwt, ES256 JWT)', async (t: TokenTarget) => t.clientCredentials, false],
    ['authorization-code exchange (PKCE, ES384 private_key_jwt)', (t: TokenTarget) => t.codeExchange(), false],
    ['introspection (client_secret_basic)', async (t: TokenTarget) => t.introspection, true],
  ] as const) {
    // Alternate the two servers so that neither gets a quieter machine.
    const baseline = await measure(bare, await pick(bare), reusable);
    const baselineName = 'bare node-oidc-provider, in-memory';
    if (!reusable) rows.push({ name: `floor: ${name.replace(/ \(.*/, '')}, bare, writes durable`, result: await measure(floor, await pick(floor), reusable), baseline, baselineName });
    rows.push({ name, result: await measure(smartAuth, await pick(smartAuth), reusable), baseline, baselineName });
  }
  return { rows, serverPid: smartAuth.pid, stop: async () => { for (const stop of stops) await stop(); } };
};

if (isMain(import.meta.url)) await runBenches('token endpoints', [benchTokens]);
