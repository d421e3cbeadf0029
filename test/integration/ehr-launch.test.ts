import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, authorizedTokens, Browser, exchangeCode, form, hiddenValue, pkce, tokenRequest } from '../support/oauth.ts';
import { mintLaunch } from '../../server/launcher.ts';
import { purgeExpiredRows } from '../../server/app.ts';
import { createEhrLaunch, saveGrantContext } from '../../server/oidc/launch-store.ts';
import { saveSandboxLaunch } from '../../server/sandbox.ts';
import { addUser } from '../../server/oidc/users.ts';
import { backendClient } from '../support/backend.ts';
import { refuseAuditRecords } from '../support/audit-refusal.ts';
import { runCli, type CliResult } from '../support/cli.ts';

const SCOPE = 'launch openid fhirUser offline_access patient/*.rs user/*.rs';

describe('EHR launch', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => {
    server = await startTestServer();
    app = await server.addClient({ auth: { kind: 'public' }, launchUri: 'http://127.0.0.1:9999/launch' });
  });
  after(() => server.stop());

  const launchId = (request: { patient: string; encounter?: string; clientId?: string; fhirContext?: string[] }) =>
    mintLaunch(server.db, server.config, request);

  /** A launch refused after sign-in: the error page the person sees (unknown and expired launches get the same one). */
  const refusedAfterSignIn = async (launch: string, username: string, password: string, scope = SCOPE) => {
    const refusal = await authorize({ server, client: app, scope, launch, username, password })
      .then((r) => assert.fail(`a code or error was issued: ${r.redirect}`), (e: Error & { html?: string }) => e);
    assert.match(refusal.message, /answered 400/);
    return /<p>([^<]*expired[^<]*)<\/p>/.exec(refusal.html ?? '')?.[1];
  };

  /** Makes the audit store refuse every record of a minted launch (110100), and only those, until undone. */
  const refuseLaunchRecords = (refuse: boolean) => refuseAuditRecords(server.db, refuse, '110100');

  /** Runs `work` while the launch records cannot be written; the number of launches stored before and after. */
  async function withoutLaunchRecords(work: () => Promise<void>) {
    const count = async () => Number((await server.db('ehr_launches').count({ n: '*' }).first())?.n);
    const before = await count();
    await refuseLaunchRecords(true);
    try {
      await work();
    } finally {
      await refuseLaunchRecords(false);
    }
    return { before, after: await count() };
  }

  it('binds the launch context without a picker and returns patient, encounter and UI context', async () => {
    const launch = await launchId({ patient: 'pat-2', encounter: 'enc-2b' });
    const result = await authorize({ server, client: app, scope: SCOPE, launch });
    assert.ok(!result.pages.some((p) => p.includes('type="radio"')), 'no patient picker in an EHR launch');
    const { res, body } = await exchangeCode(server.issuer, result, app);
    assert.equal(res.status, 200);
    assert.equal(body.patient, 'pat-2');
    assert.equal(body.encounter, 'enc-2b');
    assert.equal(body.need_patient_banner, false);
    assert.equal(body.smart_style_url, `${server.issuer}/smart-style/v1.json`);
    assert.ok(body.scope.split(' ').includes('launch'));
    const encounter = await fetch(`${server.fhirBase}/Encounter/enc-2b`, { headers: { authorization: `Bearer ${body.access_token}` } });
    assert.equal(encounter.status, 200);
  });

  it('carries the EHR\'s patient and encounter to an app asking for launch and user/ scopes only', async () => {
    const launch = await launchId({ patient: 'pat-2', encounter: 'enc-2b' });
    const body = await authorizedTokens({ server, client: app, scope: 'launch openid fhirUser user/*.rs', launch });
    assert.equal(body.patient, 'pat-2');
    assert.equal(body.encounter, 'enc-2b');
  });

  for (const scope of [SCOPE, 'launch openid fhirUser user/*.rs']) {
    it(`stops with an error page and no code when the person may not open the launched patient (${scope})`, async () => {
      const launch = await launchId({ patient: 'pat-3' });
      await assert.rejects(authorize({ server, client: app, scope, launch, username: 'dr.jones', password: 'demo-password-2' }),
        /answered 400/);
    });
  }

  it('carries fhirContext objects (SMART 2.2) given at launch', async () => {
    const launch = await launchId({ patient: 'pat-1', fhirContext: ['MedicationRequest/medreq-1-metformin'] });
    const body = await authorizedTokens({ server, client: app, scope: SCOPE, launch });
    assert.deepEqual(body.fhirContext, [{ reference: 'MedicationRequest/medreq-1-metformin' }]);
  });

  it('gives the launch context only to an app granted the launch scope: fhirContext stays back when the user withholds it or the app did not ask', async () => {
    const fhirContext = ['MedicationRequest/medreq-1-metformin'];
    const withheld = await authorize({ server, client: app, scope: SCOPE, launch: await launchId({ patient: 'pat-1', encounter: 'enc-1a', fhirContext }),
      consent: (offered) => offered.filter((s) => s.checked && s.value !== 'launch').map((s) => s.value) });
    const { body } = await exchangeCode(server.issuer, withheld, app);
    assert.ok(body.access_token, JSON.stringify(body));
    assert.ok(!body.scope.split(' ').includes('launch'));
    assert.deepEqual([body.encounter, body.fhirContext], [undefined, undefined]);
    const unasked = await authorize({ server, client: app, scope: 'openid fhirUser user/*.rs', launch: await launchId({ patient: 'pat-1', fhirContext }) });
    const other = (await exchangeCode(server.issuer, unasked, app)).body;
    assert.ok(other.access_token, JSON.stringify(other));
    assert.deepEqual([other.patient, other.fhirContext], [undefined, undefined]);
  });

  it('refuses an unknown launch id and a reused one at the authorization endpoint', async () => {
    const unknown = await authorize({ server, client: app, scope: SCOPE, launch: 'not-a-launch' }).catch((e: Error) => e);
    assert.ok(!(unknown instanceof Error) && unknown.error === 'invalid_request', String(unknown instanceof Error ? unknown.message : unknown.redirect));
    const launch = await launchId({ patient: 'pat-1' });
    const first = await authorize({ server, client: app, scope: SCOPE, launch });
    assert.ok(first.code);
    const reused = await authorize({ server, client: app, scope: SCOPE, launch });
    assert.equal(reused.error, 'invalid_request');
    assert.equal(reused.code, undefined);
  });

  it('refuses a launch id minted for another app', async () => {
    const other = await server.addClient({ auth: { kind: 'public' } });
    const launch = await launchId({ patient: 'pat-1', clientId: other.client_id });
    const result = await authorize({ server, client: app, scope: SCOPE, launch });
    assert.equal(result.error, 'invalid_request');
  });

  it('purges expired launch ids and their sandbox options with the other expired rows; live ones stay', async () => {
    const expired = await createEhrLaunch(server.db, { patient: 'pat-1' }, -1);
    const live = await createEhrLaunch(server.db, { patient: 'pat-1' }, 300);
    for (const [id, ttl] of [[expired, -1], [live, 300]] as const) await saveSandboxLaunch(server.db, id, { skipLogin: false, skipConsent: true }, ttl);
    await purgeExpiredRows(server.config, server.db);
    assert.deepEqual(await server.db('ehr_launches').whereIn('id', [expired, live]).pluck('id'), [live]);
    assert.deepEqual(await server.db('sandbox_launches').whereIn('launch_id', [expired, live]).pluck('launch_id'), [live]);
  });

  it('purges expired grant contexts with the other expired rows; live ones stay', async () => {
    const context = { launch: { patient: 'pat-1', need_patient_banner: true, smart_style_url: '' } };
    for (const [grantId, ttl] of [['expired-grant', -1], ['live-grant', 300]] as const) await saveGrantContext(server.db, grantId, context, ttl);
    await purgeExpiredRows(server.config, server.db);
    assert.deepEqual(await server.db('grant_contexts').whereIn('grant_id', ['expired-grant', 'live-grant']).pluck('grant_id'), ['live-grant']);
  });

  describe('the launch API', () => {
    async function backendToken(scope: string) {
      const ehr = await server.addClient({ name: 'EHR', redirectUris: [], auth: { kind: 'secret' }, grantTypes: ['client_credentials'], scope });
      const { body } = await tokenRequest(server.issuer, { grant_type: 'client_credentials', scope }, ehr);
      assert.ok(body.access_token, JSON.stringify(body));
      return body.access_token as string;
    }
    const post = (token: string | undefined, data: unknown) => fetch(`${server.issuer}/api/launch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(data),
    });

    it('mints a launch id for a caller that may read the patient', async () => {
      const token = await backendToken('system/Patient.rs system/Encounter.rs');
      const res = await post(token, { patient: 'pat-3', encounter: 'enc-3a', client_id: app.client_id });
      assert.equal(res.status, 201);
      const { launch, expires_in } = await res.json();
      assert.match(launch, /^[A-Za-z0-9_-]{20,}$/);
      assert.equal(expires_in, 300);
      const result = await authorize({ server, client: app, scope: SCOPE, launch });
      assert.equal((await exchangeCode(server.issuer, result, app)).body.encounter, 'enc-3a');
    });

    it('refuses callers without a token (401), without Patient read access (403) and bad context (400)', async () => {
      assert.equal((await post(undefined, { patient: 'pat-1' })).status, 401);
      assert.equal((await post('not.a.token', { patient: 'pat-1' })).status, 401);
      assert.equal((await post(await backendToken('system/Observation.rs'), { patient: 'pat-1' })).status, 403);
      const token = await backendToken('system/Patient.r');
      const manyReads = Array.from({ length: 21 }, () => 'MedicationRequest/medreq-1-metformin');
      for (const bad of [{ patient: 'nobody' }, { patient: 'pat-1', encounter: 'enc-2a' }, { patient: 'pat-1', fhirContext: ['Patient/pat-1'] }, { patient: 'pat-1', fhirContext: manyReads }, {}]) {
        const res = await post(token, bad);
        assert.equal(res.status, 400, JSON.stringify(bad));
        assert.equal((await res.json()).error, 'invalid_request');
      }
    });

    async function userToken(username: string, password: string, scope = 'openid fhirUser user/Patient.rs') {
      const { body } = await exchangeCode(server.issuer, await authorize({ server, client: app, scope, username, password }), app);
      assert.ok(body.access_token, JSON.stringify(body));
      return body.access_token as string;
    }

    it('lets a user launch only on the patients they may open: a clinician limited by --patients and a patient user get 403 for others', async () => {
      const jones = await userToken('dr.jones', 'demo-password-2'); // --patients pat-1 pat-2
      assert.equal((await post(jones, { patient: 'pat-3' })).status, 403);
      assert.equal((await post(jones, { patient: 'pat-2' })).status, 201);
      const amy = await userToken('amy', 'demo-password-3'); // the patient pat-1
      assert.equal((await post(amy, { patient: 'pat-2' })).status, 403);
      assert.equal((await post(amy, { patient: 'pat-1' })).status, 201);
    });

    it('tells a caller who may not launch on the patient nothing about the record: 403 before any check of patient, encounter or fhirContext', async () => {
      const jones = await userToken('dr.jones', 'demo-password-2');
      const probes = [{ patient: 'nobody' }, { patient: 'pat-3', encounter: 'enc-2a' }, { patient: 'pat-3', fhirContext: ['MedicationRequest/medreq-2-lisinopril'] }];
      for (const token of [jones, await backendToken('system/Observation.rs')]) {
        for (const probe of probes) {
          const res = await post(token, probe);
          assert.equal(res.status, 403, JSON.stringify(probe));
          assert.equal((await res.json()).error, 'insufficient_scope');
        }
      }
    });

    it('binds a launch a user makes to that user: another user who may open the patient is refused as for an expired launch, no code; the launch stays theirs', async () => {
      const jones = await userToken('dr.jones', 'demo-password-2');
      for (const scope of [SCOPE, 'openid fhirUser user/*.rs']) {
        const res = await post(jones, { patient: 'pat-2', client_id: app.client_id });
        assert.equal(res.status, 201);
        const { launch } = await res.json();
        assert.match(await refusedAfterSignIn(launch, 'dr.smith', 'demo-password-1', scope) ?? '', /^This launch has expired or was already used\./, scope);
        const own = await authorize({ server, client: app, scope, launch, username: 'dr.jones', password: 'demo-password-2' });
        assert.ok(own.code, 'the user it was made for still launches with it');
      }
    });

    it("tells a holder of another user's launch id nothing of it before sign-in (the login page of any launch), and refuses it after: the user is only known then", async () => {
      const jones = await userToken('dr.jones', 'demo-password-2');
      const res = await post(jones, { patient: 'pat-2', client_id: app.client_id });
      assert.equal(res.status, 201);
      const { launch } = await res.json();
      const loginPage = async (id: string) => {
        const { challenge } = pkce();
        const params = { response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: SCOPE, state: 's', aud: server.fhirBase, code_challenge: challenge, code_challenge_method: 'S256', launch: id };
        const step = await new Browser().follow(`${server.issuer}/authorize?${new URLSearchParams(params)}`, server.issuer);
        assert.equal(step.res.status, 200);
        return (await step.res.text()).replace(/\/interaction\/[^/"?]+/g, '/interaction/UID').replace(/name="csrf" value="[^"]*"/g, 'name="csrf"');
      };
      const page = await loginPage(launch);
      assert.match(page, /name="password"/);
      assert.ok(!page.includes('Garcia'), 'not the patient');
      const anyone = await launchId({ patient: 'pat-1', clientId: app.client_id });
      assert.equal(page, await loginPage(anyone), 'the same page as for a launch of another patient, open to anyone');
      assert.match(await refusedAfterSignIn(launch, 'dr.smith', 'demo-password-1') ?? '', /^This launch has expired or was already used\./);
      assert.ok((await authorize({ server, client: app, scope: SCOPE, launch, username: 'dr.jones', password: 'demo-password-2' })).code, 'nor could the holder spend it');
    });

    it('lets a backend bind a launch to a user it names (user: a username); unknown users and users who may not open the patient get 400 and no launch', async () => {
      const token = await backendToken('system/Patient.rs');
      const before = await server.db('ehr_launches').count({ n: '*' }).first();
      for (const [user, patient, description] of [['nobody', 'pat-2', 'user nobody is not known'], ['dr.jones', 'pat-3', 'dr.jones may not open patient pat-3'], [7, 'pat-2', 'user must be a username']] as const) {
        const res = await post(token, { patient, user });
        assert.equal(res.status, 400, String(user));
        assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: description });
      }
      assert.deepEqual(await server.db('ehr_launches').count({ n: '*' }).first(), before, 'no launch minted');
      const res = await post(token, { patient: 'pat-2', user: 'dr.jones' });
      assert.equal(res.status, 201);
      const { launch } = await res.json();
      assert.ok(await refusedAfterSignIn(launch, 'dr.smith', 'demo-password-1'));
      const body = await authorizedTokens({ server, client: app, scope: SCOPE, launch, username: 'dr.jones', password: 'demo-password-2' });
      assert.equal(body.patient, 'pat-2');
    });

    it('refuses a user naming another user for their launch (400, no launch)', async () => {
      const jones = await userToken('dr.jones', 'demo-password-2');
      const res = await post(jones, { patient: 'pat-2', user: 'dr.smith' });
      assert.equal(res.status, 400);
      assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: 'a user launches for themselves only: leave out user' });
      assert.equal((await post(jones, { patient: 'pat-2', user: 'dr.jones' })).status, 201, 'naming themselves is fine');
    });

    it('answers 503 and keeps no launch when the record of its creation (110100) cannot be written, as other audited answers', async () => {
      const token = await backendToken('system/Patient.rs');
      const launches = await withoutLaunchRecords(async () => {
        const res = await post(token, { patient: 'pat-1' });
        assert.equal(res.status, 503);
        assert.equal(res.headers.get('retry-after'), '1');
        assert.deepEqual(await res.json(), { error: 'temporarily_unavailable', error_description: 'the audit trail cannot take the record of this launch now' });
      });
      assert.equal(launches.after, launches.before, 'the launch nobody was told of is not kept');
      assert.equal((await post(token, { patient: 'pat-1' })).status, 201, 'and launches work again once the trail takes records');
    });

    it('records each launch it mints: who asked (user and app, with the token), the patient, the launch by digest, its app, context and the user it is for', async () => {
      const jones = await userToken('dr.jones', 'demo-password-2', 'openid fhirUser user/Patient.rs user/Encounter.rs user/MedicationRequest.rs');
      const res = await post(jones, { patient: 'pat-2', encounter: 'enc-2b', client_id: app.client_id, fhirContext: ['MedicationRequest/medreq-2-lisinopril'] });
      assert.equal(res.status, 201);
      const { launch } = await res.json();
      const events = (await server.audit.search({ type: '110100', patient: 'pat-2' }) as any[])
        .filter((e) => JSON.stringify(e).includes(createHash('sha256').update(launch).digest('base64url')));
      assert.equal(events.length, 1);
      const [event] = events;
      assert.ok(!JSON.stringify(event).includes(launch), 'never the launch id itself');
      assert.equal(event.action, 'C');
      const user = event.agent.find((a: any) => a.requestor);
      assert.equal(user.who.identifier.value, (await server.db('users').where('username', 'dr.jones').first('id')).id);
      assert.match(user.policy[0], /^urn:ietf:params:oauth:jti:/);
      assert.equal(event.agent.find((a: any) => a.type.coding[0].code === '110150').who.identifier.value, app.client_id);
      assert.equal(event.entity[0].what.reference, 'Patient/pat-2');
      assert.deepEqual(event.entity[1].detail.map((d: any) => `${d.type}=${d.valueString}`),
        [`client_id=${app.client_id}`, 'encounter=Encounter/enc-2b', `user=${user.who.identifier.value}`, 'fhirContext=MedicationRequest/medreq-2-lisinopril']);
      const reads = (await server.audit.search({ patient: 'pat-2', limit: 1000 }) as any[]).filter((e) => e.id !== event.id
        && e.entity.some((x: any) => x.what?.reference === 'MedicationRequest/medreq-2-lisinopril') && JSON.stringify(e.agent).includes(user.policy[0]));
      assert.equal(reads.length, 1, 'the check read the resource as the launching user, and that read is recorded as theirs');
      const refused = await server.audit.search({ type: '110100', patient: 'pat-3' });
      assert.equal((await post(jones, { patient: 'pat-3' })).status, 403);
      assert.deepEqual(await server.audit.search({ type: '110100', patient: 'pat-3' }), refused, 'a refused launch mints and records nothing');
    });

    it('refuses fhirContext naming another patient\'s resource, or an unknown one, alike (400), and mints none', async () => {
      const token = await backendToken('system/Patient.r system/MedicationRequest.r');
      const before = await server.db('ehr_launches').count({ n: '*' }).first();
      for (const reference of ['MedicationRequest/medreq-2-lisinopril', 'MedicationRequest/no-such-request']) {
        const res = await post(token, { patient: 'pat-1', client_id: app.client_id, fhirContext: [reference] });
        assert.equal(res.status, 400, reference);
        assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: `fhirContext ${reference} is not a known resource of patient pat-1` });
      }
      assert.deepEqual(await server.db('ehr_launches').count({ n: '*' }).first(), before, 'no launch minted');
      const own = await post(token, { patient: 'pat-2', client_id: app.client_id, fhirContext: ['MedicationRequest/medreq-2-lisinopril'] });
      assert.equal(own.status, 201);
      const body = await authorizedTokens({ server, client: app, scope: SCOPE, launch: (await own.json()).launch });
      assert.deepEqual(body.fhirContext, [{ reference: 'MedicationRequest/medreq-2-lisinopril' }]);
    });

    it('checks the patient as the caller sees it: one hidden from its token (test data) is refused like an unknown one (400)', async () => {
      const token = await backendToken('system/Patient.rs system/Encounter.rs');
      assert.equal((await fetch(`${server.fhirBase}/Patient/pat-4`, { headers: { authorization: `Bearer ${token}` } })).status, 404, 'pat-4 (HTEST) is hidden from it');
      for (const patient of ['pat-4', 'no-such-patient']) {
        const res = await post(token, { patient });
        assert.equal(res.status, 400, patient);
        assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: `patient ${patient} is not known` });
      }
      assert.equal((await post(token, { patient: 'pat-3', encounter: 'enc-3a' })).status, 201, 'one it may read is launched');
    });

    it('checks fhirContext as the caller sees it: a resource the caller may not read is refused like an unknown one (400), one it may read is launched (201)', async () => {
      const scope = 'openid fhirUser user/Patient.rs user/Observation.rs';
      const refusal = (reference: string) => ({ error: 'invalid_request', error_description: `fhirContext ${reference} is not a known resource of patient pat-2` });
      const hidden = 'Observation/obs-2a-hiv-vl'; // R + HIV
      const jones = await userToken('dr.jones', 'demo-password-2', scope); // clearance N
      const backend = await backendClient(server, 'system/Patient.rs system/Observation.rs', 'ES384', { clearance: 'N' });
      const { body: { access_token: system } } = await backend.token('system/Patient.rs system/Observation.rs');
      const before = await server.db('ehr_launches').count({ n: '*' }).first();
      for (const token of [jones, system]) {
        for (const reference of [hidden, 'Observation/no-such-observation']) {
          const res = await post(token, { patient: 'pat-2', fhirContext: [reference] });
          assert.equal(res.status, 400, reference);
          assert.deepEqual(await res.json(), refusal(reference));
        }
        assert.equal((await post(token, { patient: 'pat-2', fhirContext: ['Observation/obs-2a-glucose'] })).status, 201, 'an unlabelled one is launched');
      }
      const minted = Number((before as { n: number }).n) + 2;
      assert.equal(Number(((await server.db('ehr_launches').count({ n: '*' }).first()) as { n: number }).n), minted, 'no launch minted for the refused ones');
      const smith = await userToken('dr.smith', 'demo-password-1', scope); // clearance R, HIV
      assert.equal((await post(smith, { patient: 'pat-2', fhirContext: [hidden] })).status, 201);
    });
  });

  it('creates no launch with the CLI when its record cannot be written: exit 1 and a clear message', async () => {
    for (const json of [false, true]) {
      let result!: CliResult;
      const launches = await withoutLaunchRecords(async () => {
        result = await runCli(server, 'launch', 'create', '--patient', 'pat-1', ...(json ? ['--json'] : []));
      });
      const message = 'the audit trail cannot take the record of this launch now: no launch was created; try again shortly';
      assert.equal(result.code, 1, result.stdout);
      if (json) assert.deepEqual(result.json, { error: message });
      else assert.equal(result.stderr.trim(), `smart-auth launch create: ${message}`);
      assert.doesNotMatch(result.stdout + result.stderr, /unexpected error|refused|SQLITE|audit_events/i, 'no internals');
      assert.equal(launches.after, launches.before, 'the launch nobody was told of is not kept');
    }
    assert.equal((await runCli(server, 'launch', 'create', '--patient', 'pat-1')).code, 0, 'and launches work again');
  });

  describe('the demo launcher page', () => {
    it('lists apps with a launch URL and gives the link that opens the app with iss and a fresh launch id', async () => {
      const browser = new Browser();
      const page = await browser.fetch(`${server.issuer}/launcher`);
      assert.equal(page.status, 200);
      const html = await page.text();
      assert.ok(html.includes(app.client_id));
      const res = await browser.fetch(`${server.issuer}/launcher`, {
        method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), patient: 'pat-1', encounter: 'enc-1a', client_id: app.client_id }),
      });
      assert.equal(res.status, 201);
      const link = /id="launch-link" href="([^"]+)"/.exec(await res.text())?.[1];
      assert.ok(link, 'no launch link on the page');
      const target = new URL(link.replaceAll('&amp;', '&'));
      assert.equal(target.origin + target.pathname, 'http://127.0.0.1:9999/launch');
      assert.equal(target.searchParams.get('iss'), server.fhirBase);
      const result = await authorize({ server, client: app, scope: SCOPE, launch: target.searchParams.get('launch')! });
      assert.equal((await exchangeCode(server.issuer, result, app)).body.encounter, 'enc-1a');
    });

    it('skips the login for demo accounts only: another account is not signed in without its password (400, no launch)', async () => {
      await addUser(server.db, { username: 'staff', password: 'staff-password-1', name: 'Real Staff', fhirUser: 'Practitioner/staff', attributes: { purposes: ['TREAT'] } });
      const browser = new Browser();
      const csrf = hiddenValue(await (await browser.fetch(`${server.issuer}/launcher`)).text(), 'csrf');
      const launches = await server.db('sandbox_launches').count({ n: '*' }).first();
      const launch = (user: string) => browser.fetch(`${server.issuer}/launcher`, { method: 'POST', body: form({ csrf, patient: 'pat-1', client_id: app.client_id, user, skip_login: '1' }) });
      const refused = await launch('staff');
      assert.equal(refused.status, 400);
      assert.ok((await refused.text()).includes('demo account only'));
      assert.deepEqual(await server.db('sandbox_launches').count({ n: '*' }).first(), launches, 'no sandbox launch stored');
      assert.equal((await launch('dr.smith')).status, 201);
    });

    it('binds the launch to the user chosen on the page: another user signing in is refused as for an expired launch, no code', async () => {
      const browser = new Browser();
      const html = await (await browser.fetch(`${server.issuer}/launcher`)).text();
      const res = await browser.fetch(`${server.issuer}/launcher`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), patient: 'pat-1', client_id: app.client_id, user: 'dr.jones' }) });
      assert.equal(res.status, 201);
      const launch = new URL((/id="launch-link" href="([^"]+)"/.exec(await res.text())?.[1] ?? '').replaceAll('&amp;', '&')).searchParams.get('launch')!;
      assert.match(await refusedAfterSignIn(launch, 'dr.smith', 'demo-password-1') ?? '', /^This launch has expired/);
      const body = await authorizedTokens({ server, client: app, scope: SCOPE, launch, username: 'dr.jones', password: 'demo-password-2' });
      assert.equal(body.patient, 'pat-1');
    });

    it('shows a 503 page and keeps no launch when the record of the launch (110100) cannot be written', async () => {
      const browser = new Browser();
      const csrf = hiddenValue(await (await browser.fetch(`${server.issuer}/launcher`)).text(), 'csrf');
      const launch = () => browser.fetch(`${server.issuer}/launcher`, { method: 'POST', body: form({ csrf, patient: 'pat-1', client_id: app.client_id, user: 'dr.smith', skip_login: '1' }) });
      const sandboxLaunches = await server.db('sandbox_launches').count({ n: '*' }).first();
      const launches = await withoutLaunchRecords(async () => {
        const res = await launch();
        assert.equal(res.status, 503);
        assert.equal(res.headers.get('retry-after'), '1');
        assert.match(res.headers.get('content-type') ?? '', /text\/html/);
        const html = await res.text();
        assert.match(html, /The audit trail cannot take the record of this launch now, so no launch was created\./);
        assert.doesNotMatch(html, /launch-link|refused|SQLITE|trigger|audit_events/i, 'no launch link, no internals');
      });
      assert.equal(launches.after, launches.before, 'the launch nobody was told of is not kept');
      assert.deepEqual(await server.db('sandbox_launches').count({ n: '*' }).first(), sandboxLaunches, 'nor its sandbox options');
      assert.equal((await launch()).status, 201, 'and launches work again once the trail takes records');
    });

    it('refuses a launcher form without its CSRF token', async () => {
      const res = await fetch(`${server.issuer}/launcher`, { method: 'POST', body: form({ patient: 'pat-1', client_id: app.client_id }), redirect: 'manual' });
      assert.equal(res.status, 403);
    });

    it('registers no app with REGISTRATION=token (403), as /register and /apps need an initial access token then', async () => {
      const guarded = await startTestServer({ DEMO: 'true', REGISTRATION: 'token' });
      try {
        const browser = new Browser();
        const html = await (await browser.fetch(`${guarded.issuer}/launcher`)).text();
        const clients = await guarded.db('oidc_payloads').where('model', 'Client').count({ n: '*' }).first();
        const res = await browser.fetch(`${guarded.issuer}/launcher/register`, {
          method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), launch_uri: 'http://127.0.0.1:9/l', redirect_uri: 'http://127.0.0.1:9/r', client_type: 'confidential' }),
        });
        assert.equal(res.status, 403);
        assert.ok((await res.text()).includes('initial access token'));
        assert.deepEqual(await guarded.db('oidc_payloads').where('model', 'Client').count({ n: '*' }).first(), clients, 'no client stored');
      } finally {
        await guarded.stop();
      }
    });

    it('is not served outside demo mode', async () => {
      const plain = await startTestServer({ DEMO: 'false' });
      try {
        assert.equal((await fetch(`${plain.issuer}/launcher`)).status, 404);
        assert.equal((await fetch(`${plain.issuer}/launcher/register`, { method: 'POST', body: form({ launch_uri: 'http://127.0.0.1:9/l', redirect_uri: 'http://127.0.0.1:9/r' }) })).status, 404);
        assert.equal((await fetch(`${plain.issuer}/launcher`, { method: 'POST', body: form({ patient: 'pat-1', skip_login: '1' }) })).status, 404);
      } finally {
        await plain.stop();
      }
    });
  });
});

describe('EHR launch for another FHIR server', () => {
  const OTHER = 'https://other.example.org/fhir';
  let server: TestServer;
  before(async () => { server = await startTestServer({ ADDITIONAL_FHIR_BASES: OTHER }); });
  after(() => server.stop());

  // Its patient, encounter and fhirContext were checked on this server's FHIR base; the same ids elsewhere may be other people.
  it('refuses (invalid_request, no code) a launch with an aud other than the FHIR base it was made for, and keeps it usable there', async () => {
    const app = await server.addClient({ auth: { kind: 'public' } });
    const launch = await mintLaunch(server.db, server.config, { patient: 'pat-2', encounter: 'enc-2a' });
    const elsewhere = await authorize({ server, client: app, scope: SCOPE, launch, aud: OTHER });
    assert.equal(elsewhere.error, 'invalid_request', elsewhere.redirect.href);
    assert.equal(elsewhere.code, undefined);
    const here = await authorizedTokens({ server, client: app, scope: SCOPE, launch });
    assert.equal(here.patient, 'pat-2');
  });
});
