// The smart-auth command, run as an administrator would, against the database of a running server.
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { exportJWK, generateKeyPair } from 'jose';
import { startTestServer, type TestServer } from '../support/server.ts';
import { runCli, runCliBinary } from '../support/cli.ts';
import { authorize, exchangeCode, secretAccepted } from '../support/oauth.ts';
import { refuseAuditRecords } from '../support/audit-refusal.ts';
import { verifyPassword } from '../../server/oidc/passwords.ts';

describe('CLI', function () {
  // Each command is a process of its own (about a second of CPU to start), and some cases run ten of them: on a
  // loaded machine they took more than the suite's 60 s. This bounds a hang, it measures nothing.
  this.timeout(180_000);
  let server: TestServer;
  before(async () => { server = await startTestServer(); });
  after(() => server.stop());

  const cli = (...args: string[]) => runCli(server, ...args);

  it('adds a user and a client that the running server uses at once', async () => {
    const user = await cli('user', 'add', 'nurse.kim', '--password', 'a-long-password', '--name', 'Kim Lee', '--fhir-user', 'Practitioner/dr-jones',
      '--role', 'http://terminology.hl7.org/CodeSystem/practitioner-role|nurse', '--purpose', 'TREAT', '--clearance', 'R', '--sensitivity', 'HIV,PSY',
      '--patients', 'pat-1,pat-3', '--organization', 'Example Hospital', '--json');
    assert.equal(user.code, 0);
    assert.equal(user.json.username, 'nurse.kim');
    assert.deepEqual(user.json.roles, [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'nurse' }]);
    assert.deepEqual(user.json.patients, ['pat-1', 'pat-3']);
    const created = (await server.audit.search({ type: '110113', subtype: '110137' }) as any[])
      .filter((e) => e.action === 'C' && e.entity[0].what.identifier.value === user.json.id);
    assert.deepEqual(created.map((e) => e.entity[0].detail.map((d: any) => d.valueString)), [['account', 'administrator']], 'the new account is recorded');

    const client = await cli('client', 'add', '--name', 'CLI app', '--redirect-uri', 'http://127.0.0.1:9999/callback',
      '--post-logout-redirect-uri', 'http://127.0.0.1:9999/signed-out', '--secret', '--json');
    assert.equal(client.code, 0);
    assert.ok(client.json.client_id && client.json.client_secret);
    const clients = await cli('client', 'list', '--json');
    assert.ok(!JSON.stringify(clients.json).includes(client.json.client_secret), 'no secrets in listings');
    assert.deepEqual(clients.json.clients.find((c: { client_id: string }) => c.client_id === client.json.client_id).post_logout_redirect_uris, ['http://127.0.0.1:9999/signed-out']);

    const app = { ...client.json, redirect_uri: 'http://127.0.0.1:9999/callback' };
    const launch = await authorize({ server, client: app, scope: 'launch/patient openid fhirUser patient/*.rs', username: 'nurse.kim', password: 'a-long-password', patient: 'pat-3' });
    const { res, body } = await exchangeCode(server.issuer, launch, app);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.patient, 'pat-3');
    const read = () => fetch(`${server.fhirBase}/Patient/pat-3`, { headers: { authorization: `Bearer ${body.access_token}` } });
    assert.equal((await read()).status, 200);

    assert.equal((await cli('client', 'remove', client.json.client_id)).code, 0);
    // Another process revoked it: the server trusts its last "not revoked" answer for REVOCATION_CACHE_MS (1 s).
    let status = (await read()).status;
    for (let i = 0; i < 30 && status !== 401; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await read()).status;
    }
    assert.equal(status, 401, 'removing a client ends its access');

    const list = await cli('user', 'list', '--json');
    const kim = list.json.users.find((u: { username: string }) => u.username === 'nurse.kim');
    assert.equal(kim.clearance, 'R');
    assert.ok(!JSON.stringify(list.json).includes('scrypt'), 'no password hashes in listings');

  });

  it('adds a privacy officer (--privacy-officer), shown as such by user list', async () => {
    const added = await cli('user', 'add', 'po.lee', '--password', 'a-long-password', '--purpose', 'HOPERAT', '--privacy-officer', '--json');
    assert.equal(added.code, 0);
    assert.equal(added.json.privacyOfficer, true);
    const list = await cli('user', 'list', '--json');
    assert.equal(list.json.users.find((u: { username: string }) => u.username === 'po.lee').privacyOfficer, true);
    assert.match((await cli('user', 'list')).stdout, /po\.lee .*\(privacy officer\)/);
  });

  it('disables a user, who then cannot log in', async () => {
    assert.equal((await cli('user', 'add', 'temp.user', '--password', 'temporary-pass', '--fhir-user', 'Patient/pat-3')).code, 0);
    assert.equal((await cli('user', 'disable', 'temp.user')).code, 0);
    const app = await server.addClient({ auth: { kind: 'public' } });
    const launch = await authorize({ server, client: app, scope: 'openid', username: 'temp.user', password: 'temporary-pass' }).catch((e: Error) => e);
    assert.ok(launch instanceof Error || !launch.code, 'a disabled user gets no code');
  });

  it('registers an asymmetric client from a JWKS file, and a backend client with system scopes', async () => {
    const { publicKey } = await generateKeyPair('ES384');
    const file = join(tmpdir(), `jwks-${process.pid}.json`);
    writeFileSync(file, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES384' }] }));
    const backend = await cli('client', 'add', '--name', 'Backend', '--jwks-file', file, '--scope', 'system/Patient.rs system/Observation.rs', '--json');
    assert.equal(backend.code, 0, backend.stderr);
    const listed = (await cli('client', 'list', '--json')).json.clients.find((c: { client_id: string }) => c.client_id === backend.json.client_id);
    assert.deepEqual(listed.grant_types, ['client_credentials']);
    assert.equal(listed.token_endpoint_auth_method, 'private_key_jwt');
    assert.equal(listed.smart_scope, 'system/Patient.rs system/Observation.rs');
    assert.equal((await cli('client', 'remove', backend.json.client_id)).code, 0);
  });

  it('binds a backend client to its organization, shows the binding in the listing, and refuses a bad one', async () => {
    const { publicKey } = await generateKeyPair('ES384');
    const file = join(tmpdir(), `jwks-org-${process.pid}.json`);
    writeFileSync(file, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES384' }] }));
    const org = 'urn:oid:2.16.840.1.113883.19.5';
    const bound = await cli('client', 'add', '--name', 'Lab feed', '--jwks-file', file, '--scope', 'system/Patient.rs', '--organization-id', org, '--organization', 'Example Lab', '--json');
    assert.equal(bound.code, 0, bound.stderr);
    const listed = (await cli('client', 'list', '--json')).json.clients.find((c: { client_id: string }) => c.client_id === bound.json.client_id);
    assert.deepEqual([listed.organization_id, listed.organization_name], [org, 'Example Lab']);
    const line = (await cli('client', 'list')).stdout.split('\n').find((l) => l.startsWith(bound.json.client_id));
    assert.match(line ?? '', /Lab feed {2}\(organization Example Lab, urn:oid:2\.16\.840\.1\.113883\.19\.5\)$/);
    const count = async () => (await cli('client', 'list', '--json')).json.clients.length;
    const before = await count();
    for (const [args, message] of [
      [['--organization-id', 'not a uri'], /--organization-id must be a URI/],
      [['--organization', 'Example Lab'], /--organization needs --organization-id/],
    ] as const) {
      const refused = await cli('client', 'add', '--name', 'Bad', '--jwks-file', file, '--scope', 'system/Patient.rs', ...args);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr ?? '', message);
    }
    assert.equal(await count(), before, 'nothing stored');
    assert.equal((await cli('client', 'remove', bound.json.client_id)).code, 0);
  });

  it('changes the organization a client is bound to (client update), recorded; refuses a bad change and changes nothing', async () => {
    const { publicKey } = await generateKeyPair('ES384');
    const file = join(tmpdir(), `jwks-update-${process.pid}.json`);
    writeFileSync(file, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES384' }] }));
    const added = await cli('client', 'add', '--name', 'Moving lab', '--jwks-file', file, '--scope', 'system/Patient.rs', '--organization-id', 'urn:oid:1.2.3', '--organization', 'Old Lab', '--json');
    const clientId = added.json.client_id as string;
    const stored = async () => JSON.parse((await server.db('oidc_payloads').where({ model: 'Client', id: clientId }).first('payload')).payload);

    const moved = await cli('client', 'update', clientId, '--organization-id', 'urn:oid:1.2.4', '--organization', 'New Lab', '--json');
    assert.equal(moved.code, 0, moved.stderr);
    assert.deepEqual(moved.json, { client_id: clientId, organization_id: 'urn:oid:1.2.4', organization_name: 'New Lab', ended_access: true });
    assert.deepEqual([(await stored()).organization_id, (await stored()).organization_name, (await stored()).client_name], ['urn:oid:1.2.4', 'New Lab', 'Moving lab']);
    const unnamed = await cli('client', 'update', clientId, '--organization-id', 'urn:oid:1.2.5');
    assert.equal(unnamed.stdout, `${clientId} is bound to organization urn:oid:1.2.5; its access tokens and grants issued before the change, and in the minute after it, have ended\n`);
    assert.equal((await stored()).organization_name, undefined, 'a new binding does not keep the old name');
    const unbound = await cli('client', 'update', clientId, '--no-organization');
    assert.equal(unbound.stdout, `${clientId} is bound to no organization; its access tokens and grants issued before the change, and in the minute after it, have ended\n`);
    const unchanged = await cli('client', 'update', clientId, '--no-organization', '--json');
    assert.equal(unchanged.json.ended_access, false, 'the same binding again ends nothing');
    assert.equal((await cli('client', 'update', clientId, '--no-organization')).stdout, `${clientId} is bound to no organization already: nothing changed\n`);
    assert.equal((await stored()).organization_id, undefined);

    const before = await stored();
    for (const [args, message, code] of [
      [[clientId], /give --organization-id <uri> \[--organization "<name>"\], or --no-organization/, 2],
      [[clientId, '--organization-id', 'urn:oid:1.2.6', '--no-organization'], /or --no-organization/, 2],
      [[clientId, '--organization-id', 'not a uri'], /--organization-id must be a URI/, 2],
      [[clientId, '--organization', 'Name only'], /--organization needs --organization-id/, 2],
      [['no-such-client', '--no-organization'], /client no-such-client is not registered/, 2],
      [['--no-organization'], /a client_id is required/, 2],
    ] as const) {
      const refused = await cli('client', 'update', ...args, '--json');
      assert.equal(refused.code, code, args.join(' '));
      assert.match(refused.json.error, message);
    }
    assert.deepEqual(await stored(), before, 'nothing changed');
    const records = (await server.audit.search({ type: '110113', subtype: '110129' }) as any[])
      .filter((e) => e.action === 'U' && e.entity[0].what.identifier.value === clientId);
    assert.equal(records.length, 3, 'each change recorded, and the same binding again not');
    assert.deepEqual(records[0].entity[0].detail.map((d: any) => [d.type, d.valueString]),
      [['changed', 'organization_id'], ['changed', 'organization_name'], ['ended', 'grants and access tokens']], 'and that the client\'s access ended');
  });

  it('sets the same password with the hash made before the transaction (user add, user password): the account signs in with the last one', async () => {
    for (const args of [['user', 'add', 'hash.first', '--password', 'hashed-before-1', '--fhir-user', 'Patient/pat-3'], ['user', 'password', 'hash.first', '--password', 'hashed-before-2']]) {
      const result = await cli(...args);
      assert.equal(result.code, 0, result.stderr);
      const stored = (await server.db('users').where('username', 'hash.first').first('password_hash')).password_hash as string;
      assert.match(stored, /^scrypt\$32768\$/, 'at the product\'s cost');
      assert.ok(await verifyPassword(args[args.indexOf('--password') + 1], stored), args[1]);
    }
    const stored = (await server.db('users').where('username', 'hash.first').first('password_hash')).password_hash as string;
    assert.equal(await verifyPassword('hashed-before-1', stored), false, 'the first password no longer works');
    const app = await server.addClient({ auth: { kind: 'secret' } });
    assert.ok((await authorize({ server, client: app, scope: 'launch/patient openid patient/*.rs', username: 'hash.first', password: 'hashed-before-2' })).code);
    const weak = await cli('user', 'password', 'hash.first', '--password', 'password1');
    assert.equal(weak.code, 2, 'the password policy still applies, before anything is written');
    assert.equal((await server.db('users').where('username', 'hash.first').first('password_hash')).password_hash, stored);
  });

  it('rotates a client secret: the running server then takes the new one only; a client without a secret is refused', async () => {
    const app = await cli('client', 'add', '--name', 'Rotated', '--redirect-uri', 'http://127.0.0.1:9999/callback', '--secret', '--json');
    const old = app.json.client_secret as string;
    const accepted = (secret: string) => secretAccepted(server.issuer, app.json.client_id, secret);
    assert.ok(await accepted(old));
    const rotated = await cli('client', 'rotate-secret', app.json.client_id, '--json');
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.equal(rotated.json.client_id, app.json.client_id);
    const secret = rotated.json.client_secret as string;
    assert.ok(secret.length >= 32 && secret !== old);
    // Another process changed it: the server rereads client metadata after CLIENT_CACHE_MS (1 s).
    let oldWorks = await accepted(old);
    for (let i = 0; i < 30 && oldWorks; i++) {
      await new Promise((r) => setTimeout(r, 100));
      oldWorks = await accepted(old);
    }
    assert.equal(oldWorks, false, 'the old secret is refused');
    assert.ok(await accepted(secret));
    const text = await cli('client', 'rotate-secret', app.json.client_id);
    assert.match(text.stdout, /^client_secret: \S{32,}  \(shown once; store it now; the old secret no longer works\)$/m);
    const records = (await server.audit.search({ type: '110113', subtype: '110129' }) as any[])
      .filter((e) => e.action === 'U' && e.entity[0].what.identifier.value === app.json.client_id);
    assert.equal(records.length, 2, 'each rotation recorded');
    assert.deepEqual(records[0].entity[0].detail.map((d: any) => d.valueString), ['client_secret']);
    assert.ok(!JSON.stringify(records).includes(secret), 'never the secret itself');

    const publicApp = await server.addClient({ auth: { kind: 'public' } });
    const keyed = await cli('client', 'add', '--name', 'Keyed', '--jwks-uri', 'https://keyed.example.org/jwks', '--redirect-uri', 'https://keyed.example.org/cb', '--json');
    for (const clientId of [publicApp.client_id, keyed.json.client_id]) {
      const before = await server.db('oidc_payloads').where({ model: 'Client', id: clientId }).first('payload');
      const refused = await cli('client', 'rotate-secret', clientId);
      assert.equal(refused.code, 2);
      assert.match(refused.stderr ?? '', /has no client secret to rotate: it authenticates with (none|private_key_jwt)/);
      assert.deepEqual(await server.db('oidc_payloads').where({ model: 'Client', id: clientId }).first('payload'), before, 'nothing changed');
    }
    const unknown = await cli('client', 'rotate-secret', 'no-such-client');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr ?? '', /client no-such-client is not registered/);
    assert.match((await cli('client', 'rotate-secret')).stderr ?? '', /a client_id is required/);
  });

  /** What an administrator's command may change. */
  const state = async () => Object.fromEntries(await Promise.all(['users', 'oidc_payloads', 'signing_keys', 'user_factors', 'privacy_holds', 'revoked_tokens', 'user_sessions']
    .map(async (table) => [table, await server.db(table).select()])));

  // One case per command: each starts a CLI process (about a second of CPU), which on a loaded CI machine took most of
  // a single test's time budget when they ran in one.
  describe('changes nothing when the audit trail cannot take the record of the change, and says so', () => {
    let app: { client_id: string };
    let unchanged: Awaited<ReturnType<typeof state>>;
    const APP = '<the client>';
    const nothingChanged = /^the audit trail cannot take the record of this change now: nothing was changed; try again$/;
    const commands = [
      ['client', 'add', '--name', 'Unrecorded too', '--redirect-uri', 'http://127.0.0.1:9999/callback', '--secret'],
      ['client', 'rotate-secret', APP],
      ['client', 'update', APP, '--organization-id', 'urn:oid:1.2.3.4'],
      ['client', 'remove', APP],
      ['user', 'add', 'unrecorded.user', '--password', 'a-long-password', '--fhir-user', 'Patient/pat-3'],
      ['user', 'password', 'rec.user', '--password', 'another-long-password'],
      ['user', 'mfa', 'rec.user', '--totp'],
      ['user', 'disable', 'rec.user'],
      ['registration', 'token', '--ttl', '600'],
      ['keys', 'rotate'],
      ['audit', 'hold', '--patient', 'pat-3', '--reason', 'litigation'],
    ];
    before(async () => {
      app = (await cli('client', 'add', '--name', 'Unrecorded', '--redirect-uri', 'http://127.0.0.1:9999/callback', '--secret', '--json')).json;
      assert.equal((await cli('user', 'add', 'rec.user', '--password', 'a-long-password', '--fhir-user', 'Patient/pat-3')).code, 0);
    });
    beforeEach(async () => {
      unchanged = await state();
      await refuseAuditRecords(server.db, true);
    });
    afterEach(() => refuseAuditRecords(server.db, false));

    for (const args of commands) {
      it(args.slice(0, 2).join(' '), async () => {
        const result = await cli(...args.map((arg) => (arg === APP ? app.client_id : arg)), '--json');
        assert.equal(result.code, 1, `${result.stdout} ${result.stderr}`);
        assert.match(result.json.error, nothingChanged);
        assert.deepEqual(await state(), unchanged);
      });
    }

    it('says so in plain text without --json', async () => {
      const plain = await cli('user', 'add', 'unrecorded.user', '--password', 'a-long-password', '--fhir-user', 'Patient/pat-3');
      assert.equal(plain.code, 1);
      assert.equal(plain.stderr, 'smart-auth user add: the audit trail cannot take the record of this change now: nothing was changed; try again\n');
      assert.deepEqual(await state(), unchanged);
    });

    it('works again once the trail takes records', async () => {
      await refuseAuditRecords(server.db, false);
      assert.equal((await cli('client', 'rotate-secret', app.client_id)).code, 0);
    });
  });

  it('purges nothing and exports nothing when the audit trail cannot take the record, and says so', async () => {
    const trail = async () => ({ events: await server.db('audit_events').count({ n: '*' }).first(), purges: await server.db('audit_purges').select() });
    assert.equal((await cli('user', 'add', 'old.record', '--password', 'a-long-password', '--fhir-user', 'Patient/pat-3')).code, 0, 'a record to purge');
    const before = await trail();
    assert.ok(Number(before.events?.n) > 0);
    const out = join(tmpdir(), `unrecorded-export-${process.pid}.json`);
    await refuseAuditRecords(server.db, true);
    try {
      const purge = await cli('audit', 'purge', '--before', new Date().toISOString(), '--json');
      assert.deepEqual(await trail(), before, 'nothing purged');
      assert.equal(purge.code, 1, `${purge.stdout} ${purge.stderr}`);
      assert.equal(purge.json.error, 'the audit trail cannot take the record of this change now: nothing was changed; try again');
      const exported = await cli('audit', 'export', '--patient', 'pat-1', '--format', 'json', '--out', out);
      assert.equal(exported.code, 1, `${exported.stdout} ${exported.stderr}`);
      assert.equal(exported.stderr, 'smart-auth audit export: the audit trail cannot take the record of this read now: nothing was exported; try again\n');
      assert.equal(exported.stdout, '');
      assert.equal(existsSync(out), false, 'nothing exported');
    } finally {
      await refuseAuditRecords(server.db, false);
    }
    assert.deepEqual(await trail(), before, 'nothing purged');
  });

  it('creates a single-use EHR launch', async () => {
    const app = await server.addClient({ auth: { kind: 'public' } });
    const { json } = await cli('launch', 'create', '--patient', 'pat-2', '--encounter', 'enc-2a', '--client', app.client_id, '--json');
    const launch = await authorize({ server, client: app, scope: 'launch openid patient/*.rs', launch: json.launch });
    assert.equal((await exchangeCode(server.issuer, launch, app)).body.encounter, 'enc-2a');
  });

  it('creates an EHR launch for one user (--user): another user signing in gets no code', async () => {
    const app = await server.addClient({ auth: { kind: 'public' } });
    const scope = 'launch openid patient/*.rs';
    const created = await cli('launch', 'create', '--patient', 'pat-2', '--user', 'dr.jones', '--json');
    assert.equal(created.code, 0, created.stdout);
    await assert.rejects(authorize({ server, client: app, scope, launch: created.json.launch }), /answered 400/, 'dr.smith may open pat-2, but the launch is not hers');
    const own = await authorize({ server, client: app, scope, launch: created.json.launch, username: 'dr.jones', password: 'demo-password-2' });
    assert.equal((await exchangeCode(server.issuer, own, app)).body.patient, 'pat-2');
  });

  it('lists and rotates signing keys: new keys are published at once and sign after the delay', async () => {
    const before = (await cli('keys', 'list', '--json')).json.keys;
    const rotated = (await cli('keys', 'rotate', '--json')).json.keys;
    assert.deepEqual(rotated.map((k: { alg: string }) => k.alg).sort(), ['ES256', 'RS256']);
    const after = (await cli('keys', 'list', '--json')).json.keys;
    assert.equal(after.length, before.length + 2);
    for (const key of rotated) assert.equal(after.find((k: { kid: string }) => k.kid === key.kid).state, 'pending');
    assert.ok(after.some((k: { state: string }) => k.state === 'signing'), 'the old keys sign until the delay has passed');
  });

  for (const [args, message] of [
    [['user', 'add', 'x'], /--password are required/],
    [['user', 'add', 'bad name!', '--password', 'long-enough'], /username/],
    [['user', 'add', 'y', '--password', 'short'], /at least 8/],
    [['user', 'add', 'z', '--password', 'long-enough', '--role', 'nocode'], /--role must be/],
    [['user', 'add', 'z', '--password', 'long-enough', '--clearance', 'X'], /--clearance/],
    [['user', 'add', 'z', '--password', 'long-enough', '--role', 'urn:smart-auth:security-role|privacy-officer'], /--privacy-officer/],
    [['user', 'disable', 'nobody-here'], /no user/],
    [['user', 'add', 'p', '--password', 'long-enough', '--purpose', 'NOPE'], /v3-ActReason/],
    [['user', 'add', 'p', '--password', 'long-enough', '--organization-id', 'not a uri'], /--organization-id/],
    [['user', 'add', 'org.empty', '--password', 'long-enough', '--fhir-user', 'Patient/pat-3', '--organization-id', ''], /--organization-id must be a URI/],
    [['client', 'add', '--name', 'x', '--secret', '--redirect-uri', 'https://a.example/cb', '--purpose', 'NOPE'], /purposes_of_use/],
    [['client', 'add', '--name', 'x', '--public', '--secret', '--redirect-uri', 'https://a.example/cb'], /exactly one/],
    [['client', 'add', '--name', 'x', '--public', '--redirect-uri', 'javascript:alert(1)'], /redirect_uris/],
    [['client', 'add', '--name', 'x', '--public', '--redirect-uri', 'https://a.example/cb#frag'], /fragment/],
    [['client', 'add', '--name', 'x', '--public', '--redirect-uri', 'https://a.example/cb', '--post-logout-redirect-uri', 'http://a.example/bye'], /post_logout_redirect_uris must use https/],
    [['client', 'add', '--name', 'x', '--public', '--redirect-uri', 'https://a.example/cb', '--scope', 'patient/*.bogus'], /SMART scopes/],
    [['client', 'add', '--name', 'x', '--public'], /needs a redirect URI/],
    [['client', 'remove', 'nope'], /no client/],
    [['launch', 'create', '--patient', 'nobody'], /not known/],
    [['launch', 'create', '--patient', 'pat-1', '--encounter', 'enc-2a'], /not an encounter of patient/],
    [['launch', 'create', '--patient', 'pat-1', '--user', 'nobody'], /user nobody is not known/],
    [['launch', 'create', '--patient', 'pat-3', '--user', 'dr.jones'], /dr.jones may not open patient pat-3/],
    [['user', 'add', 'q', '--bogus'], /Unknown option/],
  ] as const) {
    it(`explains a bad command: ${args.join(' ')}`, async () => {
      const result = await cli(...args, '--json');
      assert.equal(result.code, 2);
      assert.match(result.json.error, message);
    });
  }

  it('prints help and fails on an unknown command, saying it is unknown (the executable\'s exit status)', async () => {
    assert.match((await runCliBinary(server, {}, '--help')).stdout, /smart-auth client add/);
    const unknown = await runCliBinary(server, {}, 'frobnicate');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr!, /^smart-auth: unknown command: frobnicate\n/);
    assert.match((await cli('user', 'remove', 'x')).stderr!, /unknown command: user remove/);
  });

  it('names a missing --patient of launch create', async () => {
    const result = await cli('launch', 'create', '--json');
    assert.equal(result.code, 2);
    assert.equal(result.json.error, '--patient is required');
  });

  it('prints no "Unsupported runtime" warning from oidc-provider', async () => {
    const { stderr } = await runCliBinary(server, {}, 'keys', 'list');
    assert.doesNotMatch(stderr, /Unsupported runtime|oidc-provider WARNING/);
    // client add loads oidc-provider only when it runs, after the command has started
    const added = await runCliBinary(server, {}, 'client', 'add', '--name', 'Quiet app', '--public', '--redirect-uri', 'http://127.0.0.1:9999/quiet');
    assert.equal(added.code, 0);
    assert.doesNotMatch(added.stderr, /Unsupported runtime|oidc-provider WARNING/);
  });

  describe('default purposes of use of a new user', () => {
    const app = () => server.addClient({ auth: { kind: 'public' } });

    it('an auditor created without --purpose gets HOPERAT and can sign in to an app', async () => {
      const added = await cli('user', 'add', 'audit.two', '--password', 'a-long-password', '--auditor', '--json');
      assert.equal(added.code, 0, added.stderr);
      assert.deepEqual(added.json.purposes, ['HOPERAT']);
      const client = await app();
      const launch = await authorize({ server, client, scope: 'openid fhirUser user/AuditEvent.rs', username: 'audit.two', password: 'a-long-password' });
      assert.equal(launch.error, undefined, launch.redirect.href);
      const { res, body } = await exchangeCode(server.issuer, launch, client);
      assert.equal(res.status, 200, JSON.stringify(body));
    });

    it('a clinician gets TREAT and what the policy lets their role assert; a patient PATRQT', async () => {
      const doctor = await cli('user', 'add', 'dr.new', '--password', 'a-long-password', '--fhir-user', 'Practitioner/dr-new',
        '--role', 'http://terminology.hl7.org/CodeSystem/practitioner-role|doctor', '--json');
      assert.deepEqual(doctor.json.purposes, ['TREAT', 'HPAYMT', 'HOPERAT']);
      const pharmacist = await cli('user', 'add', 'ph.new', '--password', 'a-long-password', '--role', 'http://terminology.hl7.org/CodeSystem/practitioner-role|pharmacist', '--json');
      assert.deepEqual(pharmacist.json.purposes, ['TREAT']);
      const patient = await cli('user', 'add', 'pat.new', '--password', 'a-long-password', '--fhir-user', 'Patient/pat-3', '--json');
      assert.deepEqual(patient.json.purposes, ['PATRQT']);
      const client = await app();
      const launch = await authorize({ server, client, scope: 'launch/patient openid fhirUser patient/*.rs', username: 'pat.new', password: 'a-long-password' });
      assert.equal((await exchangeCode(server.issuer, launch, client)).body.patient, 'pat-3');

      const list = await cli('user', 'list');
      assert.match(list.stdout, /^dr\.new +Practitioner\/dr-new +active +TREAT,HPAYMT,HOPERAT /m);
      assert.match(list.stdout, /^pat\.new +Patient\/pat-3 +active +PATRQT /m);
    });

    it('refuses a user who could assert no purpose of use, and creates nothing', async () => {
      for (const args of [[], ['--fhir-user', 'Practitioner/x'], ['--purpose', 'TREAT']]) {
        const result = await cli('user', 'add', 'nobody.can', '--password', 'a-long-password', ...args, '--json');
        assert.equal(result.code, 2, args.join(' '));
        assert.match(result.json.error, /could assert no purpose of use/);
      }
      assert.ok(!(await cli('user', 'list', '--json')).json.users.some((u: { username: string }) => u.username === 'nobody.can'));
    });
  });
});
