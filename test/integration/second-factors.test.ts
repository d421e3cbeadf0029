// Second factors at sign-in (TOTP, recovery codes), acr/amr in tokens, acr_values forcing a second
// factor, and break-the-glass step-up: driven over HTTP as a browser and an app would.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestServer, type TestServer } from '../support/server.ts';
import { authorize, Browser, decodeJwt, exchangeCode, form, hiddenValue, introspectToken, shownTotpSecret, tokenRequest } from '../support/oauth.ts';
import { addUser, findUser, setPassword } from '../../server/oidc/users.ts';
import { auditEvents } from '../../server/audit/store.ts';
import { totpCode } from '../../server/auth/totp.ts';
import { enrolTotpDirectly, useTotp } from '../../server/auth/factors.ts';

const SCOPE = 'launch/patient openid fhirUser offline_access patient/*.rs';
const PWD = 'urn:smart-auth:acr:pwd';
const MFA = 'urn:smart-auth:acr:mfa';
const DOCTOR = { system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor' };

describe('second factors, acr and amr', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  let rs: Awaited<ReturnType<TestServer['addClient']>>;
  let n = 0;
  before(async () => {
    // The lockout test fails many sign-ins from this one address.
    server = await startTestServer({ LOGIN_MAX_ADDRESS_FAILURES: '1000' });
    app = await server.addClient({ auth: { kind: 'secret' } });
    rs = await server.addClient({ name: 'FHIR server', redirectUris: [], auth: { kind: 'secret' }, resourceServer: true });
  });
  after(() => server.stop());

  /** A new clinician; `totp`: with an authenticator enrolled by an administrator (its secret and recovery codes). */
  async function clinician(extra: { requireMfa?: boolean; breakGlass?: boolean; totp?: boolean } = {}) {
    const username = `clin${++n}`;
    const user = await addUser(server.db, {
      username, password: 'correct horse battery', fhirUser: 'Practitioner/dr-jones',
      attributes: { roles: [DOCTOR], purposes: ['TREAT'], requireMfa: extra.requireMfa, breakGlass: extra.breakGlass },
    });
    const enrolled = extra.totp ? await enrolTotpDirectly(server.db, user.id, server.config.keyEncryptionSecret) : undefined;
    return { username, id: user.id, password: 'correct horse battery', secret: enrolled?.secret, recoveryCodes: enrolled?.recoveryCodes };
  }

  /** Opens an authorization request as a browser does: the browser, its first answer and the interaction id. */
  async function startAuthorization() {
    const browser = new Browser();
    const start = await browser.follow(`${server.issuer}/authorize?${new URLSearchParams({
      response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: SCOPE, state: 'some-state',
      aud: server.fhirBase, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    })}`, server.issuer);
    return { browser, start, uid: /\/interaction\/([^/?]+)/.exec(start.url)![1] };
  }
  async function introspect(token: string) {
    return (await (await introspectToken(server.issuer, rs, token)).json()) as Record<string, any>;
  }
  async function tokensFor(launch: Awaited<ReturnType<typeof authorize>>) {
    assert.ok(launch.code, `no code: ${launch.error} ${launch.pages.at(-1)?.slice(0, 300)}`);
    const { res, body } = await exchangeCode(server.issuer, launch, app);
    assert.equal(res.status, 200, JSON.stringify(body));
    return { body, access: decodeJwt(body.access_token).payload, id: decodeJwt(body.id_token).payload };
  }
  const storedEvents = async () => (await auditEvents(server.db)) as any[];
  const detail = (event: any, type: string) => event.entity?.flatMap((e: any) => e.detail ?? []).find((d: any) => d.type === type)?.valueString;

  it('lists the acr levels in discovery', async () => {
    const config = await (await fetch(`${server.issuer}/.well-known/openid-configuration`)).json();
    assert.deepEqual(config.acr_values_supported, [PWD, MFA, 'urn:smart-auth:acr:phr']);
    assert.equal(config.claims_parameter_supported, true);
  });

  it('says a password-only sign-in is pwd in the id token, access token, refresh and introspection', async () => {
    const user = await clinician();
    const { body, access, id } = await tokensFor(await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password }));
    for (const claims of [access, id]) {
      assert.deepEqual(claims.amr, ['pwd']);
      assert.equal(claims.acr, PWD);
    }
    const seen = await introspect(body.access_token);
    assert.deepEqual([seen.acr, seen.amr], [PWD, ['pwd']]);
    const refreshSeen = await introspect(body.refresh_token);
    assert.deepEqual([refreshSeen.acr, refreshSeen.amr], [PWD, ['pwd']]);
    const refreshed = await tokenRequest(server.issuer, { grant_type: 'refresh_token', refresh_token: body.refresh_token }, app);
    assert.equal(refreshed.res.status, 200);
    assert.deepEqual(decodeJwt(refreshed.body.access_token).payload.amr, ['pwd'], 'a refreshed token keeps how the person signed in');
  });

  it('leads a user who must have a second factor to set up TOTP, then says otp and mfa everywhere', async () => {
    const user = await clinician({ requireMfa: true });
    const enrolled: { secret?: string; recoveryCodes?: string[] } = {};
    const { body, access, id } = await tokensFor(await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, enrolled }));
    assert.ok(enrolled.secret && /^[A-Z2-7]{32}$/.test(enrolled.secret), 'the set-up page shows the base32 secret');
    assert.equal(enrolled.recoveryCodes?.length, 10, 'ten recovery codes are shown once');
    for (const claims of [access, id, await introspect(body.access_token)]) {
      assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
      assert.equal(claims.acr, MFA);
    }
    const row = await server.db('user_factors').where({ user_id: user.id, kind: 'totp' }).first();
    assert.ok(!row.secret.includes(enrolled.secret), 'the secret is stored encrypted');
    assert.match(row.secret, /^v1\./);
    const recovery = await server.db('user_factors').where({ user_id: user.id, kind: 'recovery' }).select('secret');
    assert.equal(recovery.length, 10);
    assert.ok(recovery.every((r) => !enrolled.recoveryCodes!.some((c) => r.secret.includes(c.replace('-', '')))), 'recovery codes are stored hashed');
    const events = await storedEvents();
    const enrolment = events.find((e) => e.subtype?.[0]?.code === '110137' && detail(e, 'changed') === 'totp' && e.entity[0].what.identifier.value === user.id);
    assert.ok(enrolment, 'the enrolment is an audited security event (DICOM 110137)');
    assert.equal(enrolment.action, 'C');
  });

  it('asks for a code after the password once a factor is set up; refuses wrong and reused codes', async () => {
    const user = await clinician({ totp: true });
    // Wrong code, then the right one.
    let attempts = 0;
    let accepted = '';
    const first = await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, otp: () => (attempts++ === 0 ? '000000' : (accepted = totpCode(user.secret!))) });
    assert.equal(attempts, 2);
    assert.match(first.pages[2], /That code is not correct, or it was already used/);
    const { access } = await tokensFor(first);
    assert.deepEqual(access.amr, ['pwd', 'otp', 'mfa']);

    // The code just used is refused the second time, in a new sign-in (the very code: computing it again could
    // give the next 30 s step's, never used).
    const reused = accepted;
    const { browser, start, uid } = await startAuthorization();
    const login = await start.res.text();
    const codePage = await browser.fetch(`${server.issuer}/interaction/${uid}/login`, {
      method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username: user.username, password: user.password }),
    });
    const html = await codePage.text();
    assert.match(html, /name="otp"/);
    assert.doesNotMatch(html, /name="password"/);
    const again = await browser.fetch(`${server.issuer}/interaction/${uid}/second-factor`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), otp: reused }) });
    assert.equal(again.status, 200);
    assert.match(await again.text(), /already used/);
    // Without the CSRF token nothing is checked.
    const forged = await browser.fetch(`${server.issuer}/interaction/${uid}/second-factor`, { method: 'POST', body: form({ otp: totpCode(user.secret!, Date.now() + 30_000) }) });
    assert.equal(forged.status, 403);
    // The next step's code (within the ±1 step window) is accepted.
    const next = await browser.fetch(`${server.issuer}/interaction/${uid}/second-factor`, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), otp: totpCode(user.secret!, Date.now() + 30_000) }) });
    assert.equal(next.status, 303);
    const failures = (await storedEvents()).filter((e) => e.outcome === '4' && e.agent.some((a: any) => a.altId === user.username) && detail(e, 'amr') === 'otp');
    assert.ok(failures.length >= 2, 'each refused code is an audited failure with its method');
  });

  it('accepts a code once even when two requests bring it at the same moment', async () => {
    const user = await clinician({ totp: true });
    const code = totpCode(user.secret!);
    const results = await Promise.all(Array.from({ length: 4 }, () => useTotp(server.db, user.id, code, server.config.keyEncryptionSecret)));
    assert.equal(results.filter(Boolean).length, 1);
  });

  it('answers bad input at the second-factor and passkey endpoints with a plain message, changing nothing', async () => {
    const user = await clinician({ totp: true });
    const { browser, start, uid } = await startAuthorization();
    const login = await start.res.text();
    const csrf = hiddenValue(login, 'csrf');
    const post = (path: string, data: Record<string, string | string[]>) => browser.fetch(`${server.issuer}/interaction/${uid}/${path}`, { method: 'POST', body: form(data) });
    // No password yet: the second step is not open.
    const early = await post('second-factor', { csrf, otp: totpCode(user.secret!) });
    assert.match(await early.text(), /took too long/);
    const skipped = await post('continue', { csrf });
    assert.match(await skipped.text(), /name="password"/, 'the recovery-code step cannot be skipped to');
    // Bad passkey answers.
    for (const credential of ['', 'not json', '{"id":"AAAA","response":{}}', JSON.stringify({ id: 'x'.repeat(5000) })]) {
      const res = await post('passkey', { csrf, credential });
      assert.equal(res.status, 200);
      const html = await res.text();
      assert.match(html, /That passkey could not be used/);
      assert.doesNotMatch(html, /Error:|\bat \S+ \(|\.ts:\d+/);
    }
    const options = await post('passkey/options', { csrf: 'wrong' });
    assert.equal(options.status, 403);
    assert.equal((await options.json()).error, 'invalid_request');
    // After the password: repeated and odd codes are refused like wrong ones.
    await post('login', { csrf, username: user.username, password: user.password });
    for (const otp of [['123456', '654321'], 'x'.repeat(40), '１２３４５６', '']) {
      const res = await post('second-factor', { csrf, otp });
      assert.equal(res.status, 200);
      assert.match(await res.text(), /not correct/);
    }
    assert.equal((await server.db('user_factors').where({ user_id: user.id, kind: 'recovery' })).length, 10, 'no recovery code used up');
  });

  it('counts wrong codes toward the lockout: after five the password no longer works either', async () => {
    const user = await clinician({ totp: true });
    const refused = await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, otp: '123456' }).catch((err) => err as Error);
    assert.ok(refused instanceof Error || !('code' in refused && refused.code), 'wrong codes never give a code');
    const locked = await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, otp: () => totpCode(user.secret!) }).catch((err) => err as Error);
    assert.ok(!(locked as { code?: string }).code, 'the locked user gets no code');
    const row = await server.db('login_failures').where('throttle_key', `user:${user.username}`).first();
    assert.ok(Number(row.locked_until) > Date.now() / 1000, 'the user is locked');
  });

  it('keeps counting wrong codes when the correct password is typed again between them (no guessing in rounds)', async () => {
    const user = await clinician({ totp: true });
    const { browser, start, uid } = await startAuthorization();
    const csrf = hiddenValue(await start.res.text(), 'csrf');
    const post = (path: string, data: Record<string, string>) => browser.fetch(`${server.issuer}/interaction/${uid}/${path}`, { method: 'POST', body: form(data) });
    // Three rounds of a correct password and three wrong codes: nine wrong codes in all.
    for (let round = 0; round < 3; round++) {
      await post('login', { csrf, username: user.username, password: user.password });
      for (let i = 0; i < 3; i++) await post('second-factor', { csrf, otp: '000000' });
    }
    const row = await server.db('login_failures').where('throttle_key', `user:${user.username}`).first();
    assert.ok(row && Number(row.locked_until) > Date.now() / 1000, 'the user is locked after more than five wrong codes');
    const after = await post('login', { csrf, username: user.username, password: user.password });
    assert.doesNotMatch(await after.text(), /name="otp"/, 'the password no longer opens the code step');
  });

  it('gives a correct password back its attempt without forgetting earlier failures; a finished sign-in forgets them', async () => {
    const user = await clinician({ totp: true });
    await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, otp: () => totpCode(user.secret!) });
    assert.equal(await server.db('login_failures').where('throttle_key', `user:${user.username}`).first(), undefined, 'a finished sign-in leaves no count');
  });

  it('takes a recovery code once instead of a TOTP code', async () => {
    const user = await clinician({ totp: true });
    const [code] = user.recoveryCodes!;
    const { access } = await tokensFor(await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, otp: code.toUpperCase() }));
    assert.deepEqual(access.amr, ['pwd', 'otp', 'mfa']);
    let tries = 0;
    const reuse = await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, otp: () => (tries++ ? totpCode(user.secret!) : code) });
    assert.match(reuse.pages[2], /already used/, 'a recovery code works once');
    assert.ok(reuse.code);
  });

  /** Signs in with the password in a new browser: the page of the second step (a code, or setting one up) and how to post to it. */
  async function passwordOnly(user: { username: string; password: string }) {
    const { browser, start, uid } = await startAuthorization();
    const login = await start.res.text();
    const res = await browser.fetch(`${server.issuer}/interaction/${uid}/login`, {
      method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username: user.username, password: user.password }),
    });
    const html = await res.text();
    const post = (step: string, data: Record<string, string>) => browser.fetch(`${server.issuer}/interaction/${uid}/${step}`, { method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), ...data }) });
    return { html, post };
  }

  it('shows a new authenticator secret to each sign-in that sets one up: one shown before (to whoever knew the password) is never adopted', async () => {
    const user = await clinician({ requireMfa: true });
    const attacker = await passwordOnly(user);
    const seen = shownTotpSecret(attacker.html);
    assert.ok(seen, 'the set-up page shows a secret');
    const enrolled: { secret?: string } = {};
    await tokensFor(await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, enrolled }));
    assert.ok(enrolled.secret);
    assert.notEqual(enrolled.secret, seen, 'the later sign-in is shown a secret of its own');
    const next = await passwordOnly(user);
    const refused = await next.post('second-factor', { otp: totpCode(seen!, Date.now() + 30_000) });
    assert.match(await refused.text(), /That code is not correct/, 'codes of the secret seen first sign nobody in');
  });

  it('keeps each set-up to the secret it showed: another sign-in setting one up meanwhile swaps nothing and adopts nothing', async () => {
    const user = await clinician({ requireMfa: true });
    const mine = await passwordOnly(user);
    const secret = shownTotpSecret(mine.html)!;
    const other = await passwordOnly(user);
    const theirs = shownTotpSecret(other.html)!;
    assert.notEqual(theirs, secret);
    const wrong = await mine.post('enrol', { code: '000000' });
    assert.equal(shownTotpSecret(await wrong.text()), secret, 'a wrong code shows the secret of this set-up again');
    const ok = await mine.post('enrol', { code: totpCode(secret) });
    assert.match(await ok.text(), /class="recovery-codes"/, 'the authenticator set up with the secret shown is confirmed');
    const late = await other.post('enrol', { code: totpCode(theirs) });
    const html = await late.text();
    assert.match(html, /Sign in again/, 'a set-up still open once the user has a second factor ends');
    assert.match(html, /name="password"/);
    const confirmed = await server.db('user_factors').where({ user_id: user.id, kind: 'totp', confirmed: true });
    assert.equal(confirmed.length, 1, 'one authenticator');
    const next = await passwordOnly(user);
    assert.equal((await next.post('second-factor', { otp: totpCode(secret, Date.now() + 30_000) })).status, 303, "the user's authenticator signs in");
  });

  it('ends a sign-in waiting for its second step when the password is changed: the old password gets no further', async () => {
    const mustEnrol = await clinician({ requireMfa: true });
    const hasTotp = await clinician({ totp: true });
    const enrolling = await passwordOnly(mustEnrol);
    const verifying = await passwordOnly(hasTotp);
    for (const { id } of [mustEnrol, hasTotp]) await setPassword(server.db, (await findUser(server.db, id))!, 'a new password chosen');
    const steps = [
      await enrolling.post('enrol', { code: totpCode(shownTotpSecret(enrolling.html)!) }),
      await verifying.post('second-factor', { otp: totpCode(hasTotp.secret!) }),
    ];
    for (const res of steps) {
      assert.equal(res.status, 200);
      const html = await res.text();
      assert.match(html, /Sign in again/);
      assert.match(html, /name="password"/);
    }
    assert.equal((await server.db('user_factors').where({ user_id: mustEnrol.id, kind: 'totp', confirmed: true })).length, 0, 'no authenticator was set up');
  });

  it('signs a password-only session in again once a second factor is required or set up: the session is not enough', async () => {
    const required = await clinician();
    const browser = new Browser();
    await tokensFor(await authorize({ server, client: app, scope: SCOPE, username: required.username, password: required.password, browser }));
    await server.db('users').where('id', required.id).update({ attributes: JSON.stringify({ roles: [DOCTOR], purposes: ['TREAT'], requireMfa: true }) });
    const enrolled: { secret?: string } = {};
    const again = await authorize({ server, client: app, scope: SCOPE, username: required.username, password: required.password, browser, enrolled });
    assert.ok(again.pages.some((p) => p.includes('name="password"')), 'asked to sign in again');
    assert.ok(enrolled.secret, 'and to set up a second factor');
    assert.equal((await tokensFor(again)).access.acr, MFA);
    const same = await authorize({ server, client: app, scope: SCOPE, browser });
    assert.ok(!same.pages.some((p) => p.includes('name="password"')), 'the new session with its second factor signs in');

    const enrolledLater = await clinician();
    const other = new Browser();
    await tokensFor(await authorize({ server, client: app, scope: SCOPE, username: enrolledLater.username, password: enrolledLater.password, browser: other }));
    const { secret } = await enrolTotpDirectly(server.db, enrolledLater.id, server.config.keyEncryptionSecret);
    const asked = await authorize({ server, client: app, scope: SCOPE, username: enrolledLater.username, password: enrolledLater.password, browser: other, otp: () => totpCode(secret) });
    assert.ok(asked.pages.some((p) => p.includes('name="otp"')), 'a user who now has a second factor is asked for it');
    assert.deepEqual((await tokensFor(asked)).access.amr, ['pwd', 'otp', 'mfa']);
  });

  it('cancels an authorization only by its form with the CSRF token: a plain link to abort changes nothing', async () => {
    const user = await clinician();
    const { browser, start, uid } = await startAuthorization();
    const login = await start.res.text();
    const link = await browser.fetch(`${server.issuer}/interaction/${uid}/abort`);
    assert.ok(link.status >= 400, `a GET cancels nothing (${link.status})`);
    assert.match(login, new RegExp(`<form method="post" action="/interaction/${uid}/abort"`), 'the login page cancels with a form');
    const forged = await browser.fetch(`${server.issuer}/interaction/${uid}/abort`, { method: 'POST', body: form({}) });
    assert.equal(forged.status, 403, 'nor a POST without the CSRF token');
    const signedIn = await browser.follow(`${server.issuer}/interaction/${uid}/login`, server.issuer, {
      method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username: user.username, password: user.password }),
    });
    const picker = await signedIn.res.text();
    assert.match(picker, /Choose a patient/, 'the authorization goes on');
    const next = /\/interaction\/([^/?]+)/.exec(signedIn.url)![1];
    assert.match(picker, new RegExp(`<form method="post" action="/interaction/${next}/abort"`), 'the picker cancels with a form');
    const cancelled = await browser.follow(`${server.issuer}/interaction/${next}/abort`, server.issuer, { method: 'POST', body: form({ csrf: hiddenValue(picker, 'csrf') }) });
    assert.equal(new URL(cancelled.url).searchParams.get('error'), 'access_denied');
  });

  it('makes a password-only user set up a second factor when the app asks for acr mfa (acr_values or claims)', async () => {
    const requests: Record<string, string>[] = [{ acr_values: MFA }, { claims: JSON.stringify({ id_token: { acr: { essential: true, values: [MFA] } } }) }];
    for (const extra of requests) {
      const user = await clinician();
      const enrolled: { secret?: string } = {};
      const { access, id } = await tokensFor(await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, enrolled, extra }));
      assert.ok(enrolled.secret, `set-up forced by ${Object.keys(extra)[0]}`);
      assert.equal(access.acr, MFA);
      assert.equal(id.acr, MFA);
    }
  });

  it('signs a password-only session in again when the app asks for more; a session that already has it is reused', async () => {
    const user = await clinician({ totp: true });
    const browser = new Browser();
    await tokensFor(await authorize({ server, client: app, scope: SCOPE, username: user.username, password: user.password, otp: () => totpCode(user.secret!), browser }));
    // The session has mfa: asking for mfa needs no new sign-in.
    const same = await authorize({ server, client: app, scope: SCOPE, browser, extra: { acr_values: MFA } });
    assert.ok(!same.pages.some((p) => p.includes('name="password"')), 'no new sign-in');
    assert.equal((await tokensFor(same)).access.acr, MFA);
    // A phishing-resistant sign-in is asked for: the mfa session is not enough, the person signs in again.
    const stronger = await authorize({ server, client: app, scope: SCOPE, browser, username: user.username, password: user.password, otp: () => totpCode(user.secret!, Date.now() + 30_000), extra: { acr_values: 'urn:smart-auth:acr:phr' } });
    assert.ok(stronger.pages.some((p) => p.includes('name="password"')), 'asked to sign in again');
  });

  it('makes every user of a role the policy file names set up a second factor', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'policy-')), 'policy.json');
    const policy = JSON.parse(readFileSync(new URL('../../server/hcs/default-policy.json', import.meta.url), 'utf8'));
    writeFileSync(file, JSON.stringify({ ...policy, secondFactorRoles: [`${DOCTOR.system}|${DOCTOR.code}`] }));
    const strict = await startTestServer({ POLICY_FILE: file });
    try {
      const strictApp = await strict.addClient({ auth: { kind: 'secret' } });
      for (const [username, code] of [['a.doctor', 'doctor'], ['a.nurse', 'nurse']]) {
        await addUser(strict.db, { username, password: 'correct horse battery', fhirUser: 'Practitioner/dr-jones', attributes: { roles: [{ system: DOCTOR.system, code }], purposes: ['TREAT'] } });
      }
      const enrolled: { secret?: string } = {};
      const doctor = await authorize({ server: strict, client: strictApp, scope: SCOPE, username: 'a.doctor', password: 'correct horse battery', enrolled, patient: 'pat-1' });
      assert.ok(enrolled.secret && doctor.code, 'the doctor sets up a second factor');
      const nurse: { secret?: string } = {};
      const other = await authorize({ server: strict, client: strictApp, scope: SCOPE, username: 'a.nurse', password: 'correct horse battery', enrolled: nurse, patient: 'pat-1' });
      assert.ok(!nurse.secret && other.code, 'a nurse is not asked');
    } finally {
      await strict.stop();
    }
  });

  describe('break-the-glass step-up', () => {
    const btg = (user: { username: string; password: string }, extra: Partial<Parameters<typeof authorize>[0]> = {}) => authorize({
      server, client: app, scope: 'launch/patient openid fhirUser patient/*.rs', username: user.username, password: user.password,
      patient: 'pat-1', purpose: 'BTG', btgReason: 'unconscious patient in the emergency room', ...extra,
    });

    it('needs a fresh code at consent from a user with a factor, even though the session has one', async () => {
      const user = await clinician({ breakGlass: true, totp: true });
      // Each sign-in uses a recovery code: a TOTP code counts once, and the step-up needs one of its own.
      const [first, second, third] = user.recoveryCodes!;
      const without = await btg(user, { otp: first });
      assert.equal(without.status, 400);
      assert.match(without.pages.at(-1)!, /Emergency access needs you to confirm it is you/);
      assert.match(without.pages.at(-1)!, /name="btg_otp"/);
      const wrong = await btg(user, { otp: second, btgOtp: '999999' });
      assert.equal(wrong.status, 400);
      assert.match(wrong.pages.at(-1)!, /not correct/);

      const { access } = await tokensFor(await btg(user, { otp: third, btgOtp: totpCode(user.secret!) }));
      assert.equal(access.extensions.ihe_iua.purpose_of_use[0].code, 'BTG');
      assert.deepEqual(access.amr, ['pwd', 'otp', 'mfa']);
      const alert = (await storedEvents()).find((e) => e.subtype?.[0]?.code === '110127' && e.agent[0].who.identifier.value === user.id);
      assert.ok(alert, 'the emergency override is alerted');
      assert.equal(detail(alert, 'step_up'), 'otp', 'the alert records how the user stepped up');
      assert.equal(detail(alert, 'amr'), 'pwd otp mfa', 'and how the token was authenticated');
    });

    it('offers no break-the-glass to a user without a second factor when BTG_REQUIRE_MFA is on', async () => {
      const strict = await startTestServer({ BTG_REQUIRE_MFA: 'true' });
      try {
        const strictApp = await strict.addClient({ auth: { kind: 'secret' } });
        await addUser(strict.db, { username: 'er.doc', password: 'correct horse battery', fhirUser: 'Practitioner/dr-jones', attributes: { roles: [DOCTOR], purposes: ['TREAT'], breakGlass: true } });
        const launch = await authorize({
          server: strict, client: strictApp, scope: 'launch/patient openid patient/*.rs', username: 'er.doc', password: 'correct horse battery',
          patient: 'pat-1', purpose: 'BTG', btgReason: 'emergency',
        });
        assert.doesNotMatch(launch.pages.at(-1)!, /value="BTG"/, 'BTG is not offered');
        assert.ok(!launch.code, 'and cannot be submitted');
      } finally {
        await strict.stop();
      }
    });

    it('lets demo users without a factor break the glass (BTG_REQUIRE_MFA is off in demo mode)', async () => {
      assert.equal(server.config.btgRequireMfa, false);
      const user = await clinician({ breakGlass: true });
      const { access } = await tokensFor(await btg(user));
      assert.equal(access.extensions.ihe_iua.purpose_of_use[0].code, 'BTG');
      assert.deepEqual(access.amr, ['pwd']);
      const alert = (await storedEvents()).find((e) => e.subtype?.[0]?.code === '110127' && e.agent[0].who.identifier.value === user.id);
      assert.equal(detail(alert, 'amr'), 'pwd', 'the alert records the method also without a step-up');
      assert.equal(detail(alert, 'step_up'), undefined);
    });
  });
});
