// Who may register what: anyone registers SMART apps; privileges (client_credentials, system/ scopes,
// introspection, purposes of use, a backend's clearance) come from an administrator, through the CLI or an
// initial access token that carries them; an RFC 7592 update never exceeds what the client holds.
import assert from 'node:assert/strict';
import { exportJWK, generateKeyPair } from 'jose';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize } from '../support/oauth.ts';
import { issueInitialAccessToken, type Privileges } from '../../server/oidc/registration-privileges.ts';
import { runCli } from '../support/cli.ts';


describe('registration privileges', () => {
  let server: TestServer;
  let backendJwks: { keys: object[] };
  before(async () => {
    server = await startTestServer({ RATE_LIMIT_REGISTER_PER_MINUTE: '1000' });
    const { publicKey } = await generateKeyPair('ES384');
    backendJwks = { keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES384' }] };
  });
  after(() => server.stop());

  const register = (metadata: Record<string, unknown>, token?: string, path = '/register') => fetch(`${server.issuer}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token && { authorization: `Bearer ${token}` }) },
    body: JSON.stringify(metadata),
  });
  const clientCount = async () => Number((await server.db('oidc_payloads').where('model', 'Client').count({ n: '*' }))[0].n);
  const app = { client_name: 'An app', redirect_uris: ['https://app.example.org/cb'] };
  const backend = () => ({
    client_name: 'A backend', redirect_uris: [], grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'private_key_jwt', jwks: backendJwks,
  });
  const tokenWith = (privileges: Privileges) => issueInitialAccessToken(server.db, server.host.provider, 600, privileges);

  /** Each privileged field alone, as the attack review sent them. */
  const PRIVILEGED: [field: string, metadata: () => Record<string, unknown>][] = [
    ['grant_types', () => ({ ...backend(), scope: undefined })],
    ['scope', () => ({ ...app, scope: 'openid patient/*.rs system/*.cruds' })],
    ['scope', () => ({ ...app, scope: 'user/*.rs introspect' })],
    ['resource_server', () => ({ ...app, resource_server: true })],
    ['purposes_of_use', () => ({ ...app, purposes_of_use: ['HTEST'] })],
    ['clearance', () => ({ ...app, clearance: 'V' })],
    ['sensitivity', () => ({ ...app, sensitivity: ['HIV'] })],
    ['organization_id', () => ({ ...app, organization_id: 'https://org.example/fhir/Organization/1' })],
    ['organization_id', () => ({ ...app, organization_id: 'https://org.example/fhir/Organization/1', organization_name: 'Example Org' })],
  ];

  async function assertRefused(res: Response, field: string) {
    assert.equal(res.status, 400);
    const body = await res.json();
    assert.equal(body.error, 'invalid_client_metadata');
    assert.match(body.error_description, new RegExp(`^${field}: `));
  }

  describe('anonymous (open registration)', () => {
    for (const [field, metadata] of PRIVILEGED) {
      it(`refuses ${field} (${JSON.stringify(metadata()[field])}) naming the field, and stores nothing`, async () => {
        const before = await clientCount();
        await assertRefused(await register(metadata()), field);
        assert.equal(await clientCount(), before);
      });
    }

    it('refuses the whole self-made super-client of the attack review', async () => {
      const before = await clientCount();
      const res = await register({ ...backend(), token_endpoint_auth_method: 'client_secret_basic', jwks: undefined, scope: 'system/*.cruds system/AuditEvent.rs', resource_server: true });
      assert.equal(res.status, 400);
      assert.equal((await res.json()).error, 'invalid_client_metadata');
      assert.equal(await clientCount(), before);
    });

    it('still registers a SMART app with patient/, user/, launch and identity scopes', async () => {
      const res = await register({ ...app, scope: 'openid fhirUser launch launch/patient offline_access patient/*.rs user/*.rs' });
      assert.equal(res.status, 201, await res.clone().text());
    });
  });

  describe('RFC 7592 update', () => {
    async function update(created: Record<string, any>, changes: Record<string, unknown>) {
      const { registration_client_uri: uri, registration_access_token: rat, client_id, client_secret, scope } = created;
      return fetch(uri, {
        method: 'PUT', headers: { authorization: `Bearer ${rat}`, 'content-type': 'application/json' },
        body: JSON.stringify({ client_id, client_secret, client_name: created.client_name, redirect_uris: created.redirect_uris, scope, ...changes }),
      });
    }

    it('never lets an app raise its own privileges, and leaves it as it was', async () => {
      const created = await (await register({ ...app, scope: 'openid patient/*.rs' })).json();
      await assertRefused(await update(created, { scope: 'openid patient/*.rs system/*.cruds' }), 'scope');
      await assertRefused(await update(created, { resource_server: true }), 'resource_server');
      await assertRefused(await update(created, { grant_types: ['authorization_code', 'refresh_token', 'client_credentials'] }), 'grant_types');
      await assertRefused(await update(created, { purposes_of_use: ['HTEST'] }), 'purposes_of_use');
      const read = await (await fetch(created.registration_client_uri, { headers: { authorization: `Bearer ${created.registration_access_token}` } })).json();
      assert.equal(read.scope, 'openid patient/*.rs');
      assert.equal(read.resource_server, undefined);
    });

    it('lets a backend keep, or narrow, what it was registered with, and nothing more', async () => {
      const iat = await tokenWith({ systemScope: 'system/*.rs', purposes: ['TREAT', 'HOPERAT'] });
      const created = await (await register({ ...backend(), scope: 'system/Patient.rs', purposes_of_use: ['TREAT'] }, iat)).json();
      assert.ok(created.client_id, JSON.stringify(created));
      const same = await update(created, { ...backend(), scope: 'system/Patient.r', purposes_of_use: ['TREAT'] });
      assert.equal(same.status, 200, await same.clone().text());
      const now = await same.json();
      await assertRefused(await update(now, { ...backend(), scope: 'system/Patient.rs system/Observation.rs' }), 'scope');
      await assertRefused(await update(now, { ...backend(), scope: 'system/Patient.r', purposes_of_use: ['HOPERAT'] }), 'purposes_of_use');
    });

    it('never lets a client drop the limits it was registered with: its purposes of use, a clearance below N', async () => {
      const iat = await tokenWith({ systemScope: 'system/Patient.rs', purposes: ['TREAT'], clearance: 'L' });
      const created = await (await register({ ...backend(), scope: 'system/Patient.rs', purposes_of_use: ['TREAT'], clearance: 'L' }, iat)).json();
      assert.ok(created.client_id, JSON.stringify(created));
      const limits = { ...backend(), scope: 'system/Patient.rs', purposes_of_use: ['TREAT'], clearance: 'L' };
      await assertRefused(await update(created, { ...limits, purposes_of_use: undefined }), 'purposes_of_use');
      await assertRefused(await update(created, { ...limits, purposes_of_use: [] }), 'purposes_of_use');
      await assertRefused(await update(created, { ...limits, clearance: undefined }), 'clearance');
      const stored = await server.db('oidc_payloads').where({ model: 'Client', id: created.client_id }).first('payload');
      assert.deepEqual([JSON.parse(stored.payload).purposes_of_use, JSON.parse(stored.payload).clearance], [['TREAT'], 'L'], 'left as it was');
      const kept = await update(created, limits);
      assert.equal(kept.status, 200, await kept.clone().text());
    });
  });

  describe('initial access token', () => {
    it('without privileges registers SMART apps only', async () => {
      const iat = await tokenWith({});
      for (const [field, metadata] of PRIVILEGED) await assertRefused(await register(metadata(), iat), field);
      assert.equal((await register(app, iat)).status, 201);
    });

    it('with privileges registers at most what it carries', async () => {
      const privileges: Privileges = { systemScope: 'system/Patient.rs system/Observation.rs', purposes: ['TREAT'], clearance: 'R', sensitivity: ['HIV'] };
      const iat = await tokenWith(privileges);
      await assertRefused(await register({ ...backend(), scope: 'system/*.rs' }, iat), 'scope');
      await assertRefused(await register({ ...backend(), scope: 'system/Patient.rs', resource_server: true, token_endpoint_auth_method: 'client_secret_basic', jwks: undefined }, iat), 'resource_server');
      await assertRefused(await register({ ...backend(), scope: 'system/Patient.rs', purposes_of_use: ['HTEST'] }, iat), 'purposes_of_use');
      await assertRefused(await register({ ...backend(), scope: 'system/Patient.rs', purposes_of_use: ['TREAT'], clearance: 'V' }, iat), 'clearance');
      await assertRefused(await register({ ...backend(), scope: 'system/Patient.rs', purposes_of_use: ['TREAT'], sensitivity: ['PSY'] }, iat), 'sensitivity');
      const res = await register({ ...backend(), scope: 'system/Patient.rs system/Observation.r', purposes_of_use: ['TREAT'], clearance: 'R', sensitivity: ['HIV'] }, iat);
      assert.equal(res.status, 201, await res.clone().text());
      const body = await res.json();
      assert.equal(body.scope, 'system/Patient.rs system/Observation.r');
      assert.equal(body.clearance, 'R');
    });

    it('that limits purposes of use or clearance registers no client without those limits', async () => {
      const iat = await tokenWith({ systemScope: 'system/Patient.rs', purposes: ['TREAT'], clearance: 'L' });
      const before = await clientCount();
      await assertRefused(await register({ ...backend(), scope: 'system/Patient.rs', clearance: 'L' }, iat), 'purposes_of_use');
      await assertRefused(await register({ ...backend(), scope: 'system/Patient.rs', purposes_of_use: ['TREAT'] }, iat), 'clearance');
      assert.equal(await clientCount(), before);
      assert.equal((await register({ ...backend(), scope: 'system/Patient.rs', purposes_of_use: ['TREAT'], clearance: 'M' }, iat)).status, 400, 'M is above L');
      assert.equal((await register({ ...backend(), scope: 'system/Patient.rs', purposes_of_use: ['TREAT'], clearance: 'L' }, iat)).status, 201);
    });

    it('that names an organization binds the client to it: no other organization, name or none', async () => {
      const org = 'https://org.example/fhir/Organization/1';
      const iat = await tokenWith({ systemScope: 'system/Patient.rs', organizationId: org, organizationName: 'Example Org' });
      const before = await clientCount();
      await assertRefused(await register({ ...backend(), scope: 'system/Patient.rs', organization_id: 'https://other.example/fhir/Organization/2' }, iat), 'organization_id');
      await assertRefused(await register({ ...backend(), scope: 'system/Patient.rs' }, iat), 'organization_id');
      await assertRefused(await register({ ...backend(), scope: 'system/Patient.rs', organization_id: org, organization_name: 'Another Name' }, iat), 'organization_name');
      assert.equal(await clientCount(), before);
      const res = await register({ ...backend(), scope: 'system/Patient.rs', organization_id: org, organization_name: 'Example Org' }, iat);
      assert.equal(res.status, 201, await res.clone().text());
      const created = await res.json();
      assert.equal(created.organization_id, org);
      // RFC 7592: the client cannot move itself to another organization, nor drop the binding.
      const update = (changes: Record<string, unknown>) => fetch(created.registration_client_uri, {
        method: 'PUT', headers: { authorization: `Bearer ${created.registration_access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ ...backend(), client_id: created.client_id, scope: 'system/Patient.rs', organization_id: org, organization_name: 'Example Org', ...changes }),
      });
      await assertRefused(await update({ organization_id: 'https://other.example/fhir/Organization/2' }), 'organization_id');
      await assertRefused(await update({ organization_id: undefined, organization_name: undefined }), 'organization_id');
      // Nor rename it, or drop its name: the binding is the administrator's (or the token's), whole.
      await assertRefused(await update({ organization_name: 'Another Name' }), 'organization_name');
      await assertRefused(await update({ organization_name: undefined }), 'organization_name');
      const stored = async () => JSON.parse((await server.db('oidc_payloads').where({ model: 'Client', id: created.client_id }).first('payload')).payload);
      assert.deepEqual([(await stored()).organization_id, (await stored()).organization_name], [org, 'Example Org'], 'left as it was');
      // The binding sent back as read (RFC 7592 section 2.2) is no change: accepted, and echoed.
      const same = await update({ client_name: 'A renamed backend' });
      assert.equal(same.status, 200, await same.clone().text());
      const echoed = await same.json();
      assert.deepEqual([echoed.organization_id, echoed.organization_name, echoed.client_name], [org, 'Example Org', 'A renamed backend']);
    });

    it('never lets an unbound client bind itself to an organization through RFC 7592', async () => {
      const created = await (await register({ ...backend(), scope: 'system/Patient.rs' }, await tokenWith({ systemScope: 'system/Patient.rs' }))).json();
      assert.ok(created.client_id, JSON.stringify(created));
      const update = (changes: Record<string, unknown>) => fetch(created.registration_client_uri, {
        method: 'PUT', headers: { authorization: `Bearer ${created.registration_access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ ...backend(), client_id: created.client_id, scope: 'system/Patient.rs', ...changes }),
      });
      await assertRefused(await update({ organization_id: 'https://org.example/fhir/Organization/1' }), 'organization_id');
      await assertRefused(await update({ organization_id: 'https://org.example/fhir/Organization/1', organization_name: 'Example Org' }), 'organization_id');
      const named = await update({ organization_name: 'Example Org' });
      assert.deepEqual([named.status, (await named.json()).error], [400, 'invalid_client_metadata']);
      const stored = JSON.parse((await server.db('oidc_payloads').where({ model: 'Client', id: created.client_id }).first('payload')).payload);
      assert.deepEqual([stored.organization_id, stored.organization_name], [undefined, undefined]);
    });

    it('carries its privileges at the registration endpoint under another spelling (/Register/), which the provider answers too', async () => {
      const iat = await tokenWith({ systemScope: 'system/Patient.rs' });
      const res = await register({ ...backend(), scope: 'system/Patient.rs' }, iat, '/Register/');
      assert.equal(res.status, 201, await res.clone().text());
      assert.equal((await res.json()).scope, 'system/Patient.rs');
    });

    it('for a resource server allows resource_server, client_credentials and introspect', async () => {
      const iat = await tokenWith({ resourceServer: true });
      const res = await register({ client_name: 'FHIR server', redirect_uris: [], grant_types: ['client_credentials'], response_types: [], resource_server: true, scope: 'introspect' }, iat);
      assert.equal(res.status, 201, await res.clone().text());
      assert.ok((await res.json()).client_secret);
    });

    it('is not a privilege when it has expired or is unknown', async () => {
      await assertRefused(await register({ ...backend(), scope: 'system/Patient.rs' }, 'not-a-token'), 'grant_types');
    });
  });

  describe('CLI (administrator)', () => {
    const cli = (...args: string[]) => runCli(server, ...args, '--json');

    it('issues an initial access token with bounded privileges, and refuses app scopes or unknown codes in it', async () => {
      const issued = await cli('registration', 'token', '--ttl', '600', '--scope', 'system/Patient.rs', '--purpose', 'TREAT', '--clearance', 'R', '--sensitivity', 'HIV,PSY');
      assert.equal(issued.code, 0, JSON.stringify(issued.json));
      const iat = issued.json.initial_access_token;
      await assertRefused(await register({ ...backend(), scope: 'system/Observation.rs' }, iat), 'scope');
      const res = await register({ ...backend(), scope: 'system/Patient.rs', purposes_of_use: ['TREAT'], clearance: 'R', sensitivity: ['PSY'] }, iat);
      assert.equal(res.status, 201, await res.clone().text());

      // The issue is in the audit trail: what the token allows and a digest of it, never the token.
      const alerts = (await server.audit.search({ limit: 1000 })).filter((e: any) => e.entity?.some((x: any) => x.what?.identifier?.system === `${server.issuer}/initial-access-token`));
      assert.equal(alerts.length, 1);
      assert.ok(!JSON.stringify(alerts[0]).includes(iat));
      assert.deepEqual((alerts[0] as any).entity[0].detail.filter((d: any) => d.type === 'privilege').map((d: any) => d.valueString).sort(),
        ['clearance: R', 'purposes: TREAT', 'sensitivity: HIV PSY', 'systemScope: system/Patient.rs']);

      for (const bad of [['--scope', 'patient/*.rs'], ['--clearance', 'X'], ['--sensitivity', 'NOPE'], ['--purpose', 'NOPE'], ['--organization-id', 'no uri'], ['--organization', 'A name']]) {
        const refused = await cli('registration', 'token', ...bad);
        assert.equal(refused.code, 2, bad.join(' '));
        assert.ok(refused.json.error);
      }
    });

    it('issues an initial access token that binds what it registers to an organization', async () => {
      const org = 'urn:oid:2.16.840.1.113883.19.5';
      const issued = await cli('registration', 'token', '--scope', 'system/Patient.rs', '--organization-id', org, '--organization', 'Example Lab');
      assert.equal(issued.code, 0, JSON.stringify(issued.json));
      const iat = issued.json.initial_access_token;
      await assertRefused(await register({ ...backend(), scope: 'system/Patient.rs' }, iat), 'organization_id');
      const res = await register({ ...backend(), scope: 'system/Patient.rs', organization_id: org, organization_name: 'Example Lab' }, iat);
      assert.equal(res.status, 201, await res.clone().text());
    });
  });

  describe('display metadata', () => {
    for (const [name, clientName] of [
      ['NUL', 'Good\u0000App'], ['BEL', 'Bell\u0007'], ['CR/LF', 'Line\r\nBreak'], ['a right-to-left override', 'Safe\u202Egnp.exe'],
      ['a left-to-right isolate', 'A\u2066B'], ['101 characters', 'x'.repeat(101)],
    ] as const) {
      it(`refuses a client_name with ${name}, at /register and in an RFC 7592 update`, async () => {
        const before = await clientCount();
        const res = await register({ ...app, client_name: clientName });
        assert.equal(res.status, 400);
        assert.match((await res.json()).error_description, /client_name/);
        assert.equal(await clientCount(), before);
        const created = await (await register(app)).json();
        const updated = await fetch(created.registration_client_uri, {
          method: 'PUT', headers: { authorization: `Bearer ${created.registration_access_token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ client_id: created.client_id, client_secret: created.client_secret, redirect_uris: app.redirect_uris, client_name: clientName }),
        });
        assert.equal(updated.status, 400);
      });
    }

    it('stores client_name normalised to NFC, and counts characters, not UTF-16 units', async () => {
      const res = await register({ ...app, client_name: 'Cafe\u0301 ' + '\u{1F600}'.repeat(90) });
      assert.equal(res.status, 201, await res.clone().text());
      assert.equal((await res.json()).client_name, 'Caf\u00e9 ' + '\u{1F600}'.repeat(90));
    });

    it('refuses a client name with control characters from the CLI too', async () => {
      const res = await runCli(server, 'client', 'add', '--name', 'Evil\u202Eapp', '--public', '--redirect-uri', 'https://app.example.org/cb', '--json');
      assert.equal(res.code, 2);
    });

    for (const field of ['logo_uri', 'client_uri', 'policy_uri', 'tos_uri']) {
      it(`holds ${field} to the redirect URI rules`, async () => {
        for (const uri of ['javascript:alert(1)', 'http://app.example.org/x', 'https://app.example.org/x#frag']) {
          const res = await register({ ...app, [field]: uri });
          assert.equal(res.status, 400, `${field}=${uri}`);
          assert.match((await res.json()).error_description, new RegExp(field));
        }
        assert.equal((await register({ ...app, [field]: 'https://app.example.org/x' })).status, 201);
      });
    }

    it('shows the host of the redirect URI beside the app name on the login and consent pages', async () => {
      const created = await (await register({ ...app, client_name: 'Trusted Health', redirect_uris: ['http://127.0.0.1:9999/callback'], token_endpoint_auth_method: 'none' })).json();
      const launch = await authorize({ server, client: { client_id: created.client_id, redirect_uri: 'http://127.0.0.1:9999/callback' }, scope: 'launch/patient openid patient/*.rs' });
      const [login, consent] = [launch.pages.find((p) => p.includes('name="password"'))!, launch.pages.find((p) => p.includes('name="decision"'))!];
      for (const page of [login, consent]) assert.match(page, /<strong>Trusted Health<\/strong> <span class="app-host">\(returns to 127\.0\.0\.1:9999\)<\/span>/);
    });
  });
});
