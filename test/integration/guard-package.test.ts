// The guard as a package: packages/guard/build.js (`npm run build`) compiles @smart-auth/guard, `npm pack` packs it, and a fresh
// plain-JavaScript project installs the tarball (offline: its dependencies link to the ones already
// installed here) and runs a Koa app and a node:http app protected by it, on plain node without a loader.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startTestServer, type TestServer } from '../support/server.ts';
import { authorize, exchangeCode } from '../support/oauth.ts';
import { startDemoFhirServer, startScript, type ChildServer } from '../support/processes.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const PACKAGE = join(ROOT, 'packages/guard');
const APP_ORIGIN = 'https://app.example.org';

const KOA_APP = `
import Koa from 'koa';
import { allowOrigins, balpAudit, httpUpstream, ruleOptions, smartGuard } from '@smart-auth/guard';

const { ISSUER, FHIR_BASE, UPSTREAM, PORT } = process.env;
const upstream = httpUpstream({ baseUrl: UPSTREAM });
let audited = 0;
const app = new Koa();
app.use(smartGuard({
  issuer: ISSUER, base: FHIR_BASE, upstream, upstreamBase: UPSTREAM,
  allowedOrigins: allowOrigins(['${APP_ORIGIN}']),
  ...ruleOptions(upstream),
  audit: balpAudit(FHIR_BASE, async (events) => { audited += events.length; }),
}));
app.use((ctx) => { if (ctx.path === '/audited') ctx.body = { audited }; });
app.listen(Number(PORT), '127.0.0.1', () => console.log('listening'));
`;

const HTTP_APP = `
import { createServer } from 'node:http';
import { allowOrigins, balpAudit, nodeGuard, ruleOptions, httpUpstream } from '@smart-auth/guard';

const { ISSUER, FHIR_BASE, UPSTREAM, PORT } = process.env;
const upstream = httpUpstream({ baseUrl: UPSTREAM });
let audited = 0;
const guard = nodeGuard({
  issuer: ISSUER, base: FHIR_BASE, upstream, upstreamBase: UPSTREAM,
  allowedOrigins: allowOrigins(['${APP_ORIGIN}']),
  ...ruleOptions(upstream),
  audit: balpAudit(FHIR_BASE, async (events) => { audited += events.length; }),
});
createServer((req, res) => {
  if (req.url === '/audited') return res.end(JSON.stringify({ audited }));
  guard(req, res);
}).listen(Number(PORT), '127.0.0.1', () => console.log('listening'));
`;

describe('the guard package (@smart-auth/guard), installed from its tarball into a plain JavaScript project', () => {
  let dir: string;
  let tarball: string;
  let upstream: ChildServer;
  let server: TestServer;
  const apps: Record<string, { base: string; process: ChildServer }> = {};

  before(async function () {
    this.timeout(120_000);
    dir = mkdtempSync(join(tmpdir(), 'smart-auth-package-'));
    // Built into a directory of its own: the SQLite and PostgreSQL suites run side by side in CI.
    const built = join(dir, 'package');
    execFileSync(process.execPath, [join(PACKAGE, 'build.js'), built], { stdio: 'pipe' });
    execFileSync('npm', ['pack', '--pack-destination', dir], { cwd: built, stdio: 'pipe' });
    tarball = join(dir, readdirSync(dir).find((f) => f.endsWith('.tgz'))!);
    const consumer = join(dir, 'consumer');
    execFileSync('mkdir', [consumer]);
    const linked = (name: string) => `file:${join(ROOT, 'node_modules', name)}`;
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({
      name: 'consumer', private: true, type: 'module',
      dependencies: { koa: linked('koa'), jose: linked('jose'), '@koa/bodyparser': linked('@koa/bodyparser') },
    }));
    execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball], { cwd: consumer, stdio: 'pipe' });
    writeFileSync(join(consumer, 'koa-app.js'), KOA_APP);
    writeFileSync(join(consumer, 'http-app.js'), HTTP_APP);

    upstream = await startDemoFhirServer(`sqlite:${join(dir, 'upstream.sqlite')}`);
    const bases = { koa: `http://127.0.0.1:${await freePort()}/fhir`, http: `http://127.0.0.1:${await freePort()}/r4` };
    server = await startTestServer({ ADDITIONAL_FHIR_BASES: Object.values(bases).join(',') });
    for (const [name, base] of Object.entries(bases)) {
      const env = { ISSUER: server.issuer, FHIR_BASE: base, UPSTREAM: upstream.url, PORT: new URL(base).port };
      apps[name] = { base, process: await startScript(`${name}-app.js`, env, /listening/, { cwd: consumer }) };
    }
  });
  after(async () => {
    for (const app of Object.values(apps)) await app.process.stop();
    await server?.stop();
    await upstream?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('ships compiled JavaScript with types and a files list, and needs none of the authorization server\'s dependencies', () => {
    const listing = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n');
    assert.ok(listing.includes('package/dist/resource-server/index.js'));
    assert.ok(listing.includes('package/dist/resource-server/index.d.ts'));
    assert.ok(!listing.some((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')), 'no TypeScript sources');
    assert.ok(!listing.some((f) => f.startsWith('package/test/')));
    const manifest = JSON.parse(execFileSync('tar', ['-xzOf', tarball, 'package/package.json'], { encoding: 'utf8' }));
    assert.ok(Array.isArray(manifest.files));
    const runtime = Object.keys(manifest.dependencies ?? {});
    for (const heavy of ['oidc-provider', 'knex', 'sqlite3', 'pg', 'pdfkit', 'tsx']) assert.ok(!runtime.includes(heavy), heavy);
    const consumerModules = readdirSync(join(dir, 'consumer', 'node_modules'));
    assert.deepEqual(consumerModules.filter((m) => !m.startsWith('.')).sort(), ['@koa', '@smart-auth', 'jose', 'koa']);
    assert.ok(readFileSync(join(dir, 'consumer', 'node_modules/@smart-auth/guard/dist/hcs/default-policy.json'), 'utf8').length > 0);
  });

  for (const name of ['koa', 'http']) {
    it(`protects a ${name === 'koa' ? 'Koa' : 'node:http'} app: discovery without a token, the rules and an audit record for each access`, async () => {
      const { base } = apps[name];
      const smart = await fetch(`${base}/.well-known/smart-configuration`);
      assert.equal(smart.status, 200);
      assert.equal((await smart.json()).issuer, server.issuer);
      const metadata = await (await fetch(`${base}/metadata`)).json();
      assert.equal(metadata.rest[0].security.service[0].coding[0].code, 'SMART-on-FHIR');

      const refused = await fetch(`${base}/Patient/pat-2`);
      assert.equal(refused.status, 401);
      assert.match(refused.headers.get('www-authenticate') ?? '', /^Bearer realm=/);

      const client = await server.addClient({ auth: { kind: 'secret' } });
      const launch = await authorize({ server, client, scope: 'launch/patient openid patient/*.rs', patient: 'pat-2', aud: base });
      const token = (await exchangeCode(server.issuer, launch, client)).body.access_token as string;
      const before = (await (await fetch(`http://127.0.0.1:${new URL(base).port}/audited`)).json()).audited;
      const read = (path: string) => fetch(`${base}/${path}`, { headers: { authorization: `Bearer ${token}`, origin: APP_ORIGIN } });
      const own = await read('Patient/pat-2');
      assert.equal(own.status, 200);
      assert.equal(own.headers.get('access-control-allow-origin'), APP_ORIGIN);
      assert.equal((await read('Patient/pat-1')).status, 404, 'another patient');

      const jones = await authorize({ server, client, scope: 'openid fhirUser user/*.rs', username: 'dr.jones', password: 'demo-password-2', purpose: 'TREAT', aud: base });
      const jonesToken = (await exchangeCode(server.issuer, jones, client)).body.access_token as string;
      assert.equal((await fetch(`${base}/Observation/obs-2a-hiv-vl`, { headers: { authorization: `Bearer ${jonesToken}` } })).status, 404, 'R + HIV above dr.jones\'s clearance');
      const after = (await (await fetch(`http://127.0.0.1:${new URL(base).port}/audited`)).json()).audited;
      assert.ok(after - before >= 3, `every access audited (${after - before})`);

      const preflight = await fetch(`${base}/Patient/pat-2`, { method: 'OPTIONS', headers: { origin: APP_ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
      assert.equal(preflight.status, 204);
      assert.equal(preflight.headers.get('access-control-allow-origin'), APP_ORIGIN);
    });
  }
});
