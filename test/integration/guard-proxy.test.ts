// The guard in front of a second, independent FHIR server process: inside smart-auth with
// FHIR_UPSTREAM_URL, and as the standalone guard proxy that imports only smart-auth/resource-server.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startTestServer, freePort, type TestServer } from '../support/server.ts';
import { authorize, basicAuth, Browser, exchangeCode, form, hiddenValue, pkce, revokeToken, tokenRequest } from '../support/oauth.ts';
import { dpopKey } from '../support/dpop.ts';
import { startDemoFhirServer, startGuardProxy, startScript, type ChildServer } from '../support/processes.ts';
import { DEV_KEY_ENCRYPTION_SECRET } from '../../server/config.ts';

const ON_POSTGRES = process.env.TEST_DATABASE === 'postgres';
/** A describe that `npm run test:pg` leaves out: what it checks does not depend on the server's database. */
const describeUnlessPostgres = ON_POSTGRES ? describe.skip : describe;

describe('guard in front of another FHIR server', () => {
  let dir: string;
  let upstream: ChildServer;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'smart-auth-upstream-'));
    upstream = await startDemoFhirServer(`sqlite:${join(dir, 'upstream.sqlite')}`);
  });
  after(async () => {
    await upstream.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function patientToken(server: TestServer, patient = 'pat-1') {
    const app = await server.addClient({ auth: { kind: 'secret' } });
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', patient });
    return { app, token: (await exchangeCode(server.issuer, launch, app)).body.access_token as string };
  }

  describe('smart-auth with FHIR_UPSTREAM_URL', () => {
    let server: TestServer;
    before(async () => { server = await startTestServer({ FHIR_UPSTREAM_URL: upstream.url }); });
    after(() => server.stop());

    it('reads and searches through the guard, with links rewritten to the public base', async () => {
      const { token } = await patientToken(server);
      const auth = { headers: { authorization: `Bearer ${token}` } };
      const read = await fetch(`${server.fhirBase}/Patient/pat-1`, auth);
      assert.equal(read.status, 200);
      assert.ok(read.headers.get('etag'));
      const bundle = await (await fetch(`${server.fhirBase}/Observation?_count=2`, auth)).json();
      assert.ok(bundle.entry.length > 0);
      for (const entry of bundle.entry) assert.ok(entry.fullUrl.startsWith(`${server.fhirBase}/`), entry.fullUrl);
      for (const link of bundle.link) assert.ok(link.url.startsWith(`${server.fhirBase}/`), link.url);
      assert.ok(!JSON.stringify(bundle).includes(upstream.url), 'the upstream address never leaks');
      assert.equal((await fetch(`${server.fhirBase}/Patient/pat-2`, auth)).status, 404);
      const metadata = await (await fetch(`${server.fhirBase}/metadata`)).json();
      assert.equal(metadata.rest[0].security.service[0].coding[0].code, 'SMART-on-FHIR');
    });

    it('uses the upstream for the patient picker', async () => {
      const { token } = await patientToken(server, 'pat-3');
      assert.equal((await fetch(`${server.fhirBase}/Patient/pat-3`, { headers: { authorization: `Bearer ${token}` } })).status, 200);
    });

    it('answers 502 with an OperationOutcome when the upstream fails', async () => {
      const down = await startTestServer({ FHIR_UPSTREAM_URL: `http://127.0.0.1:${await freePort()}/fhir` });
      try {
        const backendless = await down.addClient({ auth: { kind: 'secret' }, redirectUris: [], grantTypes: ['client_credentials'], scope: 'system/Patient.rs' });
        const { body } = await (await import('../support/oauth.ts')).tokenRequest(down.issuer, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, backendless);
        const res = await fetch(`${down.fhirBase}/Patient/pat-1`, { headers: { authorization: `Bearer ${body.access_token}` } });
        assert.equal(res.status, 502);
        const outcome = await res.json();
        assert.equal(outcome.resourceType, 'OperationOutcome');
        assert.doesNotMatch(JSON.stringify(outcome), /ECONNREFUSED|127\.0\.0\.1|at [\w.]+ \(/, 'no internals');
      } finally {
        await down.stop();
      }
    });
  });

  describe('the standalone guard proxy (scripts/guard-proxy.ts)', () => {
    let server: TestServer;
    let proxy: ChildServer;
    let proxyBase: string;
    let localBase: string;
    let rs: { client_id: string; client_secret?: string };
    before(async () => {
      const port = await freePort();
      proxyBase = `http://127.0.0.1:${port}/r4`;
      localBase = `http://127.0.0.1:${await freePort()}/local`;
      server = await startTestServer({ ADDITIONAL_FHIR_BASES: `${proxyBase},${localBase}` });
      rs = await server.addClient({ name: 'Guard', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
      proxy = await startGuardProxy(server, proxyBase, upstream.url, {
        GUARD_VERIFICATION: 'introspection', INTROSPECTION_CLIENT_ID: rs.client_id, INTROSPECTION_CLIENT_SECRET: rs.client_secret!,
        GUARD_INTROSPECTION_CACHE: '0',
      });
    });
    after(async () => {
      await proxy.stop();
      await server.stop();
    });

    it('enforces tokens issued for its base, checked by introspection, and sees revocation at once', async () => {
      const app = await server.addClient({ auth: { kind: 'secret' } });
      const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', patient: 'pat-2', aud: proxyBase });
      const { body } = await exchangeCode(server.issuer, launch, app);
      const read = (path: string) => fetch(`${proxyBase}/${path}`, { headers: { authorization: `Bearer ${body.access_token}` } });
      assert.equal((await read('Patient/pat-2')).status, 200);
      assert.equal((await read('Patient/pat-1')).status, 404);
      const requestId = `proxy-labels-${Date.now()}`;
      const labelled = await fetch(`${proxyBase}/Observation/obs-2a-hiv-vl`, { headers: { authorization: `Bearer ${body.access_token}`, 'x-request-id': requestId } });
      assert.equal(labelled.status, 200, 'R + HIV, within the clearance of dr.smith, who launched it');
      const [event] = (await server.audit.search({ entity: 'Observation/obs-2a-hiv-vl', limit: 1000 }) as any[]).filter((e) => JSON.stringify(e).includes(requestId));
      assert.deepEqual(event.entity.find((x: any) => x.role?.code === '4').securityLabel.map((l: any) => l.code).sort(), ['HIV', 'R'], 'the record keeps the labels the resource carried');
      const bundle = await (await read('Observation')).json();
      assert.ok(bundle.entry.every((e: { fullUrl: string }) => e.fullUrl.startsWith(`${proxyBase}/`)));

      const own = await startTestServerToken(server);
      assert.equal((await fetch(`${proxyBase}/Patient/pat-2`, { headers: { authorization: `Bearer ${own}` } })).status, 401, 'a token for another FHIR base is refused');
      assert.equal((await fetch(`${proxyBase}/Patient/pat-2`)).status, 401);

      const revoked = await revokeToken(server.issuer, app, body.access_token);
      assert.equal(revoked.status, 200);
      assert.equal((await read('Patient/pat-2')).status, 401, 'introspection sees the revocation');
      const smart = await (await fetch(`${proxyBase}/.well-known/smart-configuration`)).json();
      assert.equal(smart.issuer, server.issuer);
    });

    it('never takes a refresh token for an access token when it verifies by introspection', async () => {
      // The refresh token introspects with the authorization server's own FHIR base as aud: a guard for that base.
      const port = await freePort();
      const base = `http://127.0.0.1:${port}/fhir`;
      const own = await startTestServer({ FHIR_BASE_URL: base });
      const rs = await own.addClient({ name: 'Guard', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
      const guard = await startGuardProxy(own, base, upstream.url, {
        GUARD_VERIFICATION: 'introspection', INTROSPECTION_CLIENT_ID: rs.client_id, INTROSPECTION_CLIENT_SECRET: rs.client_secret!, GUARD_INTROSPECTION_CACHE: '0',
      });
      try {
        const app = await own.addClient({ auth: { kind: 'secret' } });
        const launch = await authorize({ server: own, client: app, scope: 'launch/patient openid offline_access patient/*.rs', patient: 'pat-2', aud: base });
        const { body } = await exchangeCode(own.issuer, launch, app);
        assert.ok(body.refresh_token);
        assert.equal((await fetch(`${base}/Patient/pat-2`, { headers: { authorization: `Bearer ${body.access_token}` } })).status, 200);
        const refresh = await fetch(`${base}/Patient/pat-2`, { headers: { authorization: `Bearer ${body.refresh_token}` } });
        assert.equal(refresh.status, 401, 'a refresh token is for the token endpoint only');
      } finally {
        await guard.stop();
        await own.stop();
      }
    });

    describe('DPoP-bound tokens, with local and with introspection verification', () => {
      let local: ChildServer;
      before(async () => {
        local = await startGuardProxy(server, localBase, upstream.url, { GUARD_VERIFICATION: 'local' });
      });
      after(() => local.stop());

      for (const mode of ['introspection', 'local'] as const) {
        it(`(${mode}) accepts a bound token only as DPoP with a fresh proof for the request`, async () => {
          const base = mode === 'local' ? localBase : proxyBase;
          const aud = base;
          const app = await server.addClient({ auth: { kind: 'public' } });
          const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', patient: 'pat-2', aud });
          const key = await dpopKey();
          const { body } = await tokenRequest(server.issuer, { grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri, code_verifier: launch.verifier }, app,
            { dpop: await key.proof({ htm: 'POST', htu: `${server.issuer}/token` }) });
          assert.equal(body.token_type, 'DPoP');
          const target = `${aud}/Patient/pat-2`;
          const proof = await key.proof({ htm: 'GET', htu: target, accessToken: body.access_token });
          const bearer = await fetch(`${base}/Patient/pat-2`, { headers: { authorization: `Bearer ${body.access_token}` } });
          assert.equal(bearer.status, 401);
          assert.match(bearer.headers.get('www-authenticate') ?? '', /^DPoP error="invalid_token"/);
          const wrongHtu = await fetch(`${base}/Patient/pat-2`, { headers: { authorization: `DPoP ${body.access_token}`, dpop: await key.proof({ htm: 'GET', htu: `${aud}/Patient/pat-1`, accessToken: body.access_token }) } });
          assert.equal(wrongHtu.status, 401);
          assert.match(wrongHtu.headers.get('www-authenticate') ?? '', /^DPoP error="invalid_dpop_proof"/);
          const good = { headers: { authorization: `DPoP ${body.access_token}`, dpop: proof } };
          assert.equal((await fetch(`${base}/Patient/pat-2`, good)).status, 200);
          const replayed = await fetch(`${base}/Patient/pat-2`, good);
          assert.equal(replayed.status, 401);
          assert.match(replayed.headers.get('www-authenticate') ?? '', /^DPoP error="invalid_dpop_proof"/);
        });
      }

      it('refuses a proof replayed at a second proxy instance behind the same public base (seen proofs are kept in the shared database)', async () => {
        // Two instances serving one public base, as behind a load balancer: the second listens on its own port.
        const secondPort = await freePort();
        const second = await startScript('scripts/guard-proxy.ts', {
          PORT: String(secondPort), HOST: '127.0.0.1', ISSUER: server.issuer, FHIR_BASE_URL: localBase, FHIR_UPSTREAM_URL: upstream.url,
          DATABASE_URL: server.config.databaseUrl, GUARD_VERIFICATION: 'local',
        }, /listening/);
        try {
          const app = await server.addClient({ auth: { kind: 'public' } });
          const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', patient: 'pat-2', aud: localBase });
          const key = await dpopKey();
          const { body } = await tokenRequest(server.issuer, { grant_type: 'authorization_code', code: launch.code!, redirect_uri: app.redirect_uri, code_verifier: launch.verifier }, app,
            { dpop: await key.proof({ htm: 'POST', htu: `${server.issuer}/token` }) });
          const good = { headers: { authorization: `DPoP ${body.access_token}`, dpop: await key.proof({ htm: 'GET', htu: `${localBase}/Patient/pat-2`, accessToken: body.access_token }) } };
          assert.equal((await fetch(`${localBase}/Patient/pat-2`, good)).status, 200);
          const replayed = await fetch(`http://127.0.0.1:${secondPort}/local/Patient/pat-2`, good);
          assert.equal(replayed.status, 401);
          assert.match(replayed.headers.get('www-authenticate') ?? '', /^DPoP error="invalid_dpop_proof"/);
        } finally {
          await second.stop();
        }
      });
    });

    it('lists in the patient picker the patients of the server the app named in aud, as the user may see them', async () => {
      const created = await fetch(`${upstream.url}/Patient/pat-upstream`, {
        method: 'PUT', headers: { 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ resourceType: 'Patient', id: 'pat-upstream', name: [{ family: 'Upstream', given: ['Only'] }] }),
      });
      assert.ok(created.status === 201 || created.status === 200);
      const app = await server.addClient({ auth: { kind: 'secret' } });
      const picker = (launch: { pages: string[] }) => launch.pages.find((html) => html.includes('type="radio"') && html.includes('name="patient"')) ?? '';

      const there = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', patient: 'pat-upstream', aud: proxyBase });
      assert.match(picker(there), /value="pat-upstream"/, 'the upstream server\'s own patient');
      assert.doesNotMatch(picker(there), /value="pat-4"/, 'test data stays hidden from dr.smith');
      assert.ok(there.pages.some((html) => html.includes('name="decision"') && html.includes('Only Upstream')), 'the consent page names the patient as that server has them');
      const { body } = await exchangeCode(server.issuer, there, app);
      assert.equal(body.patient, 'pat-upstream');
      assert.equal((await fetch(`${proxyBase}/Patient/pat-upstream`, { headers: { authorization: `Bearer ${body.access_token}` } })).status, 200);

      const here = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', patient: 'pat-1' });
      assert.doesNotMatch(picker(here), /pat-upstream/, 'the bundled store does not have it');
      assert.match(picker(here), /value="pat-1"/);

      const jones = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', patient: 'pat-2', aud: proxyBase, username: 'dr.jones', password: 'demo-password-2', purpose: 'TREAT' });
      assert.deepEqual([...picker(jones).matchAll(/name="patient" value="([^"]+)"/g)].map((m) => m[1]).sort(), ['pat-1', 'pat-2'], 'only the patients dr.jones may reach');
    });

    it('lists nobody in the patient picker (no 500) when the FHIR server behind a proxy in ADDITIONAL_FHIR_BASES is down', async () => {
      const down = await startGuardProxy(server, localBase, `http://127.0.0.1:${await freePort()}/fhir`, { GUARD_VERIFICATION: 'local' });
      try {
        const app = await server.addClient({ auth: { kind: 'secret' } });
        const browser = new Browser();
        const { challenge } = pkce();
        const signIn = await browser.follow(`${server.issuer}/authorize?${new URLSearchParams({
          response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: 'launch/patient openid patient/*.rs', state: 's', aud: localBase,
          code_challenge: challenge, code_challenge_method: 'S256',
        })}`, server.issuer);
        const uid = /\/interaction\/([^/?]+)/.exec(signIn.url)![1];
        const picker = (await browser.follow(`${server.issuer}/interaction/${uid}/login`, server.issuer, {
          method: 'POST', body: form({ csrf: hiddenValue(await signIn.res.text(), 'csrf'), username: 'dr.smith', password: 'demo-password-1' }),
        })).res;
        assert.equal(picker.status, 200);
        assert.match(await picker.text(), /Choose a patient[\s\S]*You have no patients you may open/);
      } finally {
        await down.stop();
      }
    });

    it('refuses a refresh token for its base, which introspects with that base as aud (token_type refresh_token)', async () => {
      const app = await server.addClient({ auth: { kind: 'secret' } });
      const launch = await authorize({ server, client: app, scope: 'launch/patient openid offline_access patient/*.rs', patient: 'pat-2', aud: proxyBase });
      const { body } = await exchangeCode(server.issuer, launch, app);
      const answer = await (await fetch(`${server.issuer}/introspect`, {
        method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(rs) }, body: new URLSearchParams({ token: body.refresh_token }),
      })).json();
      assert.equal(answer.aud, proxyBase);
      assert.equal((await fetch(`${proxyBase}/Patient/pat-2`, { headers: { authorization: `Bearer ${body.access_token}` } })).status, 200);
      assert.equal((await fetch(`${proxyBase}/Patient/pat-2`, { headers: { authorization: `Bearer ${body.refresh_token}` } })).status, 401);
    });

    /** Every page of a search, following next links through the proxy. */
    async function pages(first: string, bearer: string) {
      const seen: { ids: string[]; total?: number; next: boolean }[] = [];
      for (let url: string | undefined = `${proxyBase}/${first}`; url; ) {
        const res: Response = await fetch(url, { headers: { authorization: `Bearer ${bearer}` } });
        assert.equal(res.status, 200);
        const bundle = await res.json();
        url = bundle.link?.find((l: { relation: string }) => l.relation === 'next')?.url;
        if (url) assert.ok(url.startsWith(`${proxyBase}/`), url);
        seen.push({ ids: (bundle.entry ?? []).map((e: any) => `${e.resource.resourceType}/${e.resource.id}`), total: bundle.total, next: Boolean(url) });
      }
      return seen;
    }

    it('narrows a patient-bound search upstream: full pages, every result once, no total it cannot vouch for', async () => {
      const app = await server.addClient({ auth: { kind: 'secret' } });
      const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', patient: 'pat-2', aud: proxyBase });
      const token = (await exchangeCode(server.issuer, launch, app)).body.access_token;
      const walked = await pages('Observation?_count=2', token);
      const all = walked.flatMap((p) => p.ids);
      assert.ok(walked.length > 1, 'more than one page');
      assert.ok(all.every((id) => id.startsWith('Observation/obs-2')), all.join());
      assert.equal(new Set(all).size, all.length, 'no result twice');
      for (const page of walked.slice(0, -1)) assert.equal(page.ids.length, 2, `every page but the last is full: ${JSON.stringify(walked)}`);
      for (const page of walked) assert.equal(page.total, undefined, 'the FHIR server\'s total would count what the rules hide on other pages');
    });

    it('never answers an empty page with a next link when the filters hide a whole page', async () => {
      const app = await server.addClient({ auth: { kind: 'secret' } });
      const launch = await authorize({ server, client: app, scope: 'openid fhirUser user/*.rs', username: 'dr.jones', password: 'demo-password-2', purpose: 'TREAT', aud: proxyBase });
      const token = (await exchangeCode(server.issuer, launch, app)).body.access_token;
      const walked = await pages('Observation?patient=Patient/pat-2&_count=1', token);
      const all = walked.flatMap((p) => p.ids);
      assert.ok(!all.includes('Observation/obs-2a-hiv-vl'), 'the R + HIV result stays hidden');
      assert.ok(all.length > 0);
      for (const page of walked) if (page.next) assert.ok(page.ids.length > 0, 'an empty page is never followed by more');
    });

    it('seals paging links with KEY_ENCRYPTION_SECRET: they work after a restart with it, and only with it', async () => {
      const base = `http://127.0.0.1:${await freePort()}/r4`;
      const own = await startTestServer({ ADDITIONAL_FHIR_BASES: base });
      const secret = { KEY_ENCRYPTION_SECRET: 'the secret every guard instance shares, 32+ chars' };
      let guard = await startGuardProxy(own, base, upstream.url, secret);
      try {
        const app = await own.addClient({ auth: { kind: 'secret' } });
        const launch = await authorize({ server: own, client: app, scope: 'openid fhirUser user/*.rs', username: 'dr.jones', password: 'demo-password-2', purpose: 'TREAT', aud: base });
        const auth = { headers: { authorization: `Bearer ${(await exchangeCode(own.issuer, launch, app)).body.access_token}` } };
        const first = await (await fetch(`${base}/Observation?patient=Patient/pat-2&_count=1`, auth)).json();
        const next = first.link.find((l: { relation: string }) => l.relation === 'next').url;
        assert.match(next, /^[^?]+\?_page=[\w.-]+$/);
        await guard.stop();
        guard = await startGuardProxy(own, base, upstream.url, secret);
        const second = await fetch(next, auth);
        assert.equal(second.status, 200);
        assert.equal((await second.json()).entry.length, 1);
        await guard.stop();
        guard = await startGuardProxy(own, base, upstream.url);
        assert.equal((await fetch(next, auth)).status, 400, 'without the secret, a key of its own');
      } finally {
        await guard.stop();
        await own.stop();
      }
    });

    it('answers CORS preflights for the origins of apps registered at the authorization server it shares a database with', async () => {
      await server.addClient({ auth: { kind: 'public' }, redirectUris: ['https://browser-app.example.org/callback'] });
      const preflight = (origin: string) => fetch(`${proxyBase}/Patient/pat-2`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
      const allowed = await preflight('https://browser-app.example.org');
      assert.equal(allowed.status, 204);
      assert.equal(allowed.headers.get('access-control-allow-origin'), 'https://browser-app.example.org');
      for (const name of ['DPoP', 'If-None-Match', 'If-Match', 'If-Modified-Since', 'Prefer']) assert.ok((allowed.headers.get('access-control-allow-headers') ?? '').split(', ').includes(name), name);
      assert.equal((await preflight('https://stranger.example.org')).headers.get('access-control-allow-origin'), null);
      // An app registered now is allowed within CLIENT_CACHE_MS (1 s), as at the bundled /fhir.
      await server.addClient({ auth: { kind: 'public' }, redirectUris: ['https://new-app.example.org/callback'] });
      await new Promise((resolve) => setTimeout(resolve, 1100));
      assert.equal((await preflight('https://new-app.example.org')).headers.get('access-control-allow-origin'), 'https://new-app.example.org');
    });

    // Under `npm run test:pg` the proxy without a database, and the one in front of a FHIR server that keeps its data
    // in memory (below), are left out: PostgreSQL would change nothing there but where the proxy audits, which the
    // tests above check on it.
    describeUnlessPostgres('without DATABASE_URL (the audit in a FHIR audit repository)', () => {
      let repository: ReturnType<typeof createServer>;
      let repositoryUrl: string;
      before(async () => {
        repository = createServer((req, res) => req.resume().on('end', () => res.writeHead(req.method === 'PUT' ? 201 : 405).end()));
        await new Promise<void>((resolve) => repository.listen(0, '127.0.0.1', resolve));
        repositoryUrl = `http://127.0.0.1:${(repository.address() as AddressInfo).port}/audit`;
      });
      after(() => new Promise((resolve) => repository.close(resolve)));

      it('refuses to start with local verification, which cannot know a revocation without the database', async () => {
        const env = { PORT: String(await freePort()), HOST: '127.0.0.1', ISSUER: server.issuer, FHIR_BASE_URL: proxyBase, FHIR_UPSTREAM_URL: upstream.url, DATABASE_URL: '', AUDIT_FORWARD_URL: repositoryUrl };
        for (const settings of [env, { ...env, GUARD_VERIFICATION: 'local' }]) {
          await assert.rejects(startScript('scripts/guard-proxy.ts', settings, /listening/), /GUARD_VERIFICATION=local cannot know revoked tokens without DATABASE_URL: use local\+introspection or introspection, or set DATABASE_URL/);
        }
      });

      for (const mode of ['introspection', 'local+introspection'] as const) {
        describe(`(${mode}) learns from the introspection answer what the database would tell`, () => {
          let base: string;
          let guard: ChildServer;
          let noDb: TestServer;
          before(async () => {
            base = `http://127.0.0.1:${await freePort()}/r4`;
            const issuer = await startTestServer({ ADDITIONAL_FHIR_BASES: base });
            const rs = await issuer.addClient({ name: 'Guard', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
            guard = await startGuardProxy(issuer, base, upstream.url, {
              DATABASE_URL: '', AUDIT_FORWARD_URL: repositoryUrl, GUARD_VERIFICATION: mode, GUARD_INTROSPECTION_CACHE: '0',
              INTROSPECTION_CLIENT_ID: rs.client_id, INTROSPECTION_CLIENT_SECRET: rs.client_secret!,
            });
            noDb = issuer;
          });
          after(async () => {
            await guard.stop();
            await noDb.stop();
          });
          const userToken = async (username: string, password: string, purpose?: string) => {
            const app = await noDb.addClient({ auth: { kind: 'secret' } });
            const launch = await authorize({ server: noDb, client: app, scope: 'openid fhirUser user/*.rs', username, password, aud: base, ...(purpose && { purpose }) });
            return { app, token: (await exchangeCode(noDb.issuer, launch, app)).body.access_token as string };
          };
          const get = (path: string, token: string) => fetch(`${base}/${path}`, { headers: { authorization: `Bearer ${token}` } });

          it('keeps a clinician restricted to some patients (--patients) to them', async () => {
            const { token } = await userToken('dr.jones', 'demo-password-2', 'TREAT'); // pat-1 and pat-2 only
            assert.equal((await get('Patient/pat-1', token)).status, 200);
            assert.equal((await get('Patient/pat-3', token)).status, 404, 'a patient not on the list');
            const { token: smith } = await userToken('dr.smith', 'demo-password-1'); // no list: every patient
            assert.equal((await get('Patient/pat-3', smith)).status, 200);
          });

          it('lets only auditors among the clinicians read AuditEvents', async () => {
            const { token: smith } = await userToken('dr.smith', 'demo-password-1');
            const refused = await get('AuditEvent?patient=pat-2', smith);
            assert.equal(refused.status, 403);
            assert.match((await refused.json()).issue[0].diagnostics, /auditor role/);
            const { token: auditor } = await userToken('auditor', 'demo-password-4', 'HOPERAT');
            assert.equal((await get('AuditEvent?patient=pat-2', auditor)).status, 200);
          });

          it('refuses a revoked token (introspection says inactive)', async () => {
            const { app, token } = await userToken('dr.smith', 'demo-password-1');
            assert.equal((await get('Patient/pat-2', token)).status, 200);
            const revoked = await revokeToken(noDb.issuer, app, token);
            assert.equal(revoked.status, 200);
            assert.equal((await get('Patient/pat-2', token)).status, 401);
          });
        });
      }
    });

    it('refuses to start without somewhere to keep the audit trail', async function () {
      if (ON_POSTGRES) this.skip();
      const env = { PORT: String(await freePort()), HOST: '127.0.0.1', ISSUER: server.issuer, FHIR_BASE_URL: proxyBase, FHIR_UPSTREAM_URL: upstream.url, DATABASE_URL: '', AUDIT_FORWARD_URL: '' };
      await assert.rejects(startScript('scripts/guard-proxy.ts', env, /listening/), /every access is audited: set DATABASE_URL/);
    });

    it('refuses to start with what the server refuses: a short KEY_ENCRYPTION_SECRET, a base that is no URL, an issuer with a path, a bad database setting, and in production an http issuer or the development secret', async () => {
      const env = { PORT: String(await freePort()), HOST: '127.0.0.1', ISSUER: server.issuer, FHIR_BASE_URL: proxyBase, FHIR_UPSTREAM_URL: upstream.url, DATABASE_URL: server.config.databaseUrl };
      const production = { ...env, NODE_ENV: 'production', ISSUER: 'https://auth.example.org', KEY_ENCRYPTION_SECRET: 'k'.repeat(40) };
      for (const [settings, refusal] of [
        [{ ...env, KEY_ENCRYPTION_SECRET: 'short' }, /KEY_ENCRYPTION_SECRET must be at least 32 characters/],
        [{ ...env, FHIR_BASE_URL: 'fhir.example.org/r4' }, /FHIR_BASE_URL must be an absolute URL/],
        [{ ...env, ISSUER: `${server.issuer}/auth` }, /ISSUER must be an origin/],
        [{ ...env, DATABASE_URL: 'mysql://db/smart' }, /DATABASE_URL must start with sqlite: or postgres:\/\//],
        [{ ...env, DATABASE_POOL_MAX: 'many' }, /DATABASE_POOL_MAX must be a whole number/],
        // A mistyped path: before, it started on a new empty file and answered every request 503.
        [{ ...env, DATABASE_URL: `sqlite:${join(dir, 'mistyped.sqlite')}` }, /DATABASE_URL is not smart-auth's database, or smart-auth has not yet been started on it/],
        [{ ...env, GUARD_OPERATIONS: 'everything,frob' }, /GUARD_OPERATIONS names operations the guard does not know: \$frob/],
        [{ ...production, ISSUER: 'http://auth.example.org' }, /NODE_ENV=production[^]*ISSUER must be an https URL/],
        [{ ...production, KEY_ENCRYPTION_SECRET: DEV_KEY_ENCRYPTION_SECRET }, /NODE_ENV=production[^]*KEY_ENCRYPTION_SECRET must be set/],
      ] as const) {
        await assert.rejects(startScript('scripts/guard-proxy.ts', settings, /listening/), refusal);
      }
    });

    it('with DATABASE_URL, forwards the chain to the audit repository as the server does: an access is answered once in the chain, and reaches the repository when it is back', async () => {
      const base = `http://127.0.0.1:${await freePort()}/r4`;
      const kept: { entity?: { what?: { identifier?: { value?: string } } }[] }[] = [];
      let down = true;
      const repository = createServer((req, res) => {
        let body = '';
        req.on('data', (d) => { body += d; });
        req.on('end', () => {
          if (!down && req.method === 'PUT' && /\/AuditEvent\//.test(req.url ?? '')) kept.push(JSON.parse(body));
          res.writeHead(down ? 500 : 201).end();
        });
      });
      await new Promise<void>((resolve) => repository.listen(0, '127.0.0.1', resolve));
      const forwarding = await startGuardProxy(server, base, upstream.url, { AUDIT_FORWARD_URL: `http://127.0.0.1:${(repository.address() as AddressInfo).port}/audit` });
      try {
        const requestId = `outbox-${Date.now()}`;
        const refused = await fetch(`${base}/Patient/pat-1`, { headers: { 'x-request-id': requestId } });
        assert.equal(refused.status, 401, 'answered while the repository is down');
        const tagged = (events: typeof kept) => events.filter((e) => e.entity?.some((x) => x.what?.identifier?.value === requestId));
        assert.equal(tagged(await server.audit.search({ limit: 1000 }) as typeof kept).length, 1, 'the access is in the chain');
        down = false;
        for (let i = 0; i < 100 && tagged(kept).length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 100));
        assert.equal(tagged(kept).length, 1, 'and reaches the repository once it is back');
      } finally {
        await forwarding.stop();
        await new Promise((resolve) => repository.close(resolve));
      }
    });

    it('sends every access to the audit repository (AUDIT_FORWARD_URL), and answers 503 when it cannot be recorded', async () => {
      const port = await freePort();
      const base = `http://127.0.0.1:${port}/r4`;
      const kept: unknown[] = [];
      const repository = createServer((req, res) => {
        let body = '';
        req.on('data', (d) => { body += d; });
        req.on('end', () => {
          const ok = req.method === 'PUT' && /^\/audit\/AuditEvent\/[\w-]+$/.test(req.url ?? '') && !body.includes('"down"');
          if (ok) kept.push(JSON.parse(body));
          res.writeHead(ok ? 201 : 500).end();
        });
      });
      await new Promise<void>((resolve) => repository.listen(0, '127.0.0.1', resolve));
      const audited = await startGuardProxy(server, base, upstream.url, {
        DATABASE_URL: '', AUDIT_FORWARD_URL: `http://127.0.0.1:${(repository.address() as AddressInfo).port}/audit`,
        GUARD_VERIFICATION: 'introspection', INTROSPECTION_CLIENT_ID: rs.client_id, INTROSPECTION_CLIENT_SECRET: rs.client_secret!,
      });
      try {
        const backend = await server.addClient({ auth: { kind: 'secret' }, redirectUris: [], grantTypes: ['client_credentials'], scope: 'system/Patient.rs' });
        const { body } = await (await import('../support/oauth.ts')).tokenRequest(server.issuer, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, backend);
        const read = (requestId: string) => fetch(`${base}/Patient/pat-1`, { headers: { authorization: `Bearer ${body.access_token}`, 'x-request-id': requestId } });
        // A token for another base is refused, and the refusal is recorded too.
        assert.equal((await read('up')).status, 401);
        assert.equal(kept.length, 1);
        const refused = await read('down');
        assert.equal(refused.status, 503);
        assert.equal((await refused.json()).resourceType, 'OperationOutcome');
      } finally {
        await audited.stop();
        await new Promise((resolve) => repository.close(resolve));
      }
    });
  });
});

describeUnlessPostgres('the guard proxy in front of a FHIR server that answers as FHIR lets it: _include:iterate, _format, validators of a whole answer, errors with other bodies', () => {
  const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
  const observation = (id: string, extra: object) => ({ resourceType: 'Observation', id, status: 'final', code: { text: id }, subject: { reference: 'Patient/pat-2' }, ...extra });
  // pat-2's panel (visible) has two members: one R + HIV (hidden from dr.jones) performed by dr-x, one plain performed by dr-y.
  const panel = observation('panel', { hasMember: [{ reference: 'Observation/hiv-member' }, { reference: 'Observation/plain-member' }] });
  const hidden = observation('hiv-member', { performer: [{ reference: 'Practitioner/dr-x' }], meta: { security: [{ system: CONFIDENTIALITY, code: 'R' }, { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'HIV' }] } });
  const plain = observation('plain-member', { performer: [{ reference: 'Practitioner/dr-y' }] });
  const practitioner = (id: string) => ({ resourceType: 'Practitioner', id, name: [{ family: id }] });
  let upstream: ReturnType<typeof createServer>;
  let server: TestServer;
  let proxy: ChildServer;
  let base: string;
  let jones: string; // clearance N, no sensitivities
  before(async () => {
    upstream = createServer((req, res) => {
      const searchset = (entry: object[]) => ({ resourceType: 'Bundle', type: 'searchset', entry });
      const url = new URL(req.url ?? '/', 'http://upstream');
      const path = url.pathname;
      // As HAPI FHIR does, _format overrides Accept.
      // An error whose body is no OperationOutcome (here the hidden resource itself).
      if (url.searchParams.get('_id') === 'broken') return res.writeHead(409, { 'content-type': 'application/fhir+json' }).end(JSON.stringify(hidden));
      if (url.searchParams.get('_format') === 'xml') return res.writeHead(200, { 'content-type': 'application/fhir+xml' }).end('<Bundle xmlns="http://hl7.org/fhir"/>');
      // The search's answer as a server that follows :iterate gives it: the panel, its members, and their performers.
      const body = path === '/fhir/metadata'
        ? { resourceType: 'CapabilityStatement', status: 'active', date: '2026-01-01', kind: 'instance', fhirVersion: '4.0.1', format: ['xml', 'json'], rest: [{ mode: 'server' }] }
        : path === '/fhir/Observation'
        ? searchset([{ resource: panel, search: { mode: 'match' } }, ...[hidden, plain, practitioner('dr-x'), practitioner('dr-y')].map((resource) => ({ resource, search: { mode: 'include' } }))])
        : searchset([]); // no Consent
      // Validators of the whole answer, as a server may give them: the newest match's date, hidden ones included.
      res.writeHead(200, { 'content-type': 'application/fhir+json', etag: 'W/"all-matches"', 'last-modified': 'Tue, 01 Dec 2026 10:00:00 GMT' }).end(JSON.stringify(body));
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${await freePort()}/r4`;
    server = await startTestServer({ ADDITIONAL_FHIR_BASES: base });
    proxy = await startGuardProxy(server, base, `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/fhir`);
    const app = await server.addClient({ auth: { kind: 'secret' } });
    const launch = await authorize({ server, client: app, scope: 'openid fhirUser user/*.rs', username: 'dr.jones', password: 'demo-password-2', purpose: 'TREAT', aud: base });
    jones = (await exchangeCode(server.issuer, launch, app)).body.access_token as string;
  });
  after(async () => {
    await proxy.stop();
    await server.stop();
    await new Promise((resolve) => upstream.close(resolve));
  });

  it('leaves out what only a hidden included resource refers to, and the validators of the FHIR server\'s whole answer: they would tell what the hidden one holds', async () => {
    const res = await fetch(`${base}/Observation?_id=panel&_include=Observation:has-member&_include:iterate=Observation:performer`, { headers: { authorization: `Bearer ${jones}` } });
    assert.equal(res.status, 200);
    const found = ((await res.json()).entry ?? []).map((e: any) => `${e.resource.resourceType}/${e.resource.id}`);
    assert.deepEqual(found, ['Observation/panel', 'Observation/plain-member', 'Practitioner/dr-y'], 'not dr-x, who performed the hidden HIV test');
    for (const validator of ['etag', 'last-modified']) assert.equal(res.headers.get(validator), null, `no ${validator} of the FHIR server's answer, which the hidden match counts in`);
  });

  it('passes on an error of the FHIR server only as an OperationOutcome: any other body could hold what the rules hide', async () => {
    const res = await fetch(`${base}/Observation?_id=broken`, { headers: { authorization: `Bearer ${jones}` } });
    assert.equal(res.status, 409);
    const body = await res.json();
    assert.equal(body.resourceType, 'OperationOutcome');
    assert.ok(!JSON.stringify(body).includes('hiv-member'), JSON.stringify(body));
  });

  it('answers FHIR JSON only: a _format it could not read is refused with 406 before the FHIR server is asked', async () => {
    const get = (query: string) => fetch(`${base}/Observation?_id=panel&${query}`, { headers: { authorization: `Bearer ${jones}` } });
    for (const format of ['xml', 'application/fhir+xml', 'text/turtle']) {
      const res = await get(`_format=${encodeURIComponent(format)}`);
      assert.equal(res.status, 406, format);
      assert.equal((await res.json()).issue[0].code, 'not-supported', format);
    }
    for (const format of ['json', 'application/fhir+json', 'application/json']) assert.equal((await get(`_format=${encodeURIComponent(format)}`)).status, 200, format);
    const posted = await fetch(`${base}/Observation/_search`, { method: 'POST', headers: { authorization: `Bearer ${jones}`, 'content-type': 'application/x-www-form-urlencoded' }, body: '_id=panel&_format=xml' });
    assert.equal(posted.status, 406, 'in the form of a POSTed _search too');
    assert.deepEqual((await (await fetch(`${base}/metadata`)).json()).format, ['json'], 'and its CapabilityStatement says so');
  });
});

async function startTestServerToken(server: TestServer): Promise<string> {
  const app = await server.addClient({ auth: { kind: 'secret' } });
  const launch = await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', patient: 'pat-2' });
  return (await exchangeCode(server.issuer, launch, app)).body.access_token;
}
