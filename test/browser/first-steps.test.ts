// What a new user meets first, in a real browser: the home page, the picker and consent as a clinician,
// a tester and a patient see them, and the apps page after repeated launches.
import assert from 'node:assert/strict';
import { chromiumSuite } from '../support/browser.ts';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { addUser } from '../../server/oidc/users.ts';
import { mintLaunch } from '../../server/launcher.ts';

const ALLOW = 'button[name=decision][value=allow]';
const PICKER = 'input[type=radio][name=patient]';
const PURPOSE = 'select[name=purpose_of_use]';

describe('first steps of a new user, in Chromium', function () {
  this.timeout(60_000);
  const suite = chromiumSuite({
    app: { name: 'Growth Chart', auth: { kind: 'public' } },
    // A tester: may assert HTEST (is-a HOPERAT, which the policy lets a user without a role assert) besides HOPERAT.
    setup: (server) => addUser(server.db, { username: 'tester', password: 'tester-password', name: 'Terry Tester', fhirUser: 'Practitioner/dr-smith', attributes: { purposes: ['HOPERAT', 'HTEST'] } }),
  });

  async function allow(verifier: string) {
    const { res, body } = await suite.exchange(await suite.backToApp(ALLOW), verifier);
    assert.equal(res.status, 200, JSON.stringify(body));
    return body;
  }

  const read = (path: string, token: string) => fetch(`${suite.server.fhirBase}/${path}`, { headers: { authorization: `Bearer ${token}` } });
  const pickerIds = () => suite.page.locator(PICKER).evaluateAll((inputs) => inputs.map((i) => (i as HTMLInputElement).value));

  it('links every page a person can use from the home page, by who they are', async () => {
    await suite.page.goto(suite.server.issuer);
    for (const [audience, paths] of [
      ['App developers', ['/.well-known/smart-configuration', '/fhir/metadata', '/apps', '/launcher', '/brands']],
      ['Patients and clinicians', ['/account/apps', '/account/disclosures']],
      ['Administrators', ['/.well-known/openid-configuration']],
    ] as const) {
      const section = suite.page.locator('section.audience', { has: suite.page.getByRole('heading', { name: audience }) });
      assert.equal(await section.count(), 1, `no section for ${audience}`);
      for (const path of paths) assert.equal(await section.locator(`a[href="${path}"]`).count(), 1, `${audience}: no link to ${path}`);
    }
    await suite.page.click('a[href="/account/apps"]');
    assert.equal(await suite.page.locator('input[name=username]').count(), 1, 'the link leads to the sign-in of the apps page');
  });

  it('does not offer a clinician the test patient, whose record no purpose of theirs would show; and searches by name', async () => {
    await suite.startAuthorization('launch/patient openid fhirUser patient/*.rs');
    await suite.signIn('dr.smith', 'demo-password-1');
    await suite.page.waitForSelector(PICKER);
    const ids = await pickerIds();
    assert.ok(ids.includes('pat-1') && ids.includes('pat-2'), ids.join());
    assert.ok(!ids.includes('pat-4'), `the HTEST patient is offered to dr.smith: ${ids}`);

    await suite.page.fill('input[name=q]', 'amy');
    await suite.page.click('button:has-text("Search")');
    await suite.page.waitForURL(/q=amy/);
    assert.deepEqual(await pickerIds(), ['pat-1']);
    await suite.page.fill('input[name=q]', 'nobody at all');
    await suite.page.click('button:has-text("Search")');
    await suite.page.waitForURL(/q=nobody/);
    assert.equal(await suite.page.locator(PICKER).count(), 0);
    assert.match(await suite.page.locator('p.error').innerText(), /No patient you may open matches "nobody at all"/);

    // Choosing the test patient by hand is refused too.
    await suite.page.goto(`${suite.page.url().split('?')[0]}?patient=pat-4`);
    assert.match(await suite.page.getByRole('alert').innerText(), /Choose one of the patients listed/);
  });

  it('shows a tester the test patient, marked, preselects a test purpose for it, and the token reads it', async () => {
    const { verifier } = await suite.startAuthorization('launch/patient openid fhirUser patient/*.rs');
    await suite.signIn('tester', 'tester-password');
    await suite.page.waitForSelector(PICKER);
    const test = suite.page.locator('li', { has: suite.page.locator(`${PICKER}[value="pat-4"]`) });
    assert.match(await test.innerText(), /test patient/);
    await suite.page.check(`${PICKER}[value="pat-4"]`);
    await suite.page.getByRole('button', { name: 'Continue' }).click();
    await suite.page.waitForSelector(ALLOW);
    assert.equal(await suite.page.locator(PURPOSE).inputValue(), 'HTEST', 'the purpose under which pat-4 is visible');
    const body = await allow(verifier);
    assert.equal(body.patient, 'pat-4');
    assert.equal((await read('Patient/pat-4', body.access_token)).status, 200);
  });

  it('preselects a purpose under which an ordinary patient is visible for the same tester', async () => {
    const { verifier } = await suite.startAuthorization('launch/patient openid fhirUser patient/*.rs');
    await suite.signIn('tester', 'tester-password');
    await suite.page.check(`${PICKER}[value="pat-1"]`);
    await suite.page.getByRole('button', { name: 'Continue' }).click();
    await suite.page.waitForSelector(ALLOW);
    assert.equal(await suite.page.locator(PURPOSE).inputValue(), 'HOPERAT');
    const body = await allow(verifier);
    assert.equal((await read('Patient/pat-1', body.access_token)).status, 200);
  });

  it('says so at consent when no purpose the clinician may choose shows the launched patient', async () => {
    const launch = await mintLaunch(suite.server.db, suite.server.config, { patient: 'pat-4' });
    await suite.startAuthorization('launch openid fhirUser patient/*.rs', { launch });
    await suite.signIn('dr.smith', 'demo-password-1');
    await suite.page.waitForSelector(ALLOW);
    assert.match(await suite.page.getByRole('alert').innerText(), /None of the purposes of use you may choose lets you see the record of Test Patient: it is test data \(HTEST\)/);
  });

  it('lets an auditor added with the CLI without --purpose sign in to an app', async () => {
    const bin = new URL('../../scripts/smart-auth.js', import.meta.url).pathname;
    await promisify(execFile)(process.execPath, [bin, 'user', 'add', 'new.auditor', '--password', 'auditor-password', '--auditor'],
      { env: { ...process.env, DATABASE_URL: suite.server.config.databaseUrl, ISSUER: suite.server.issuer } });
    const { verifier } = await suite.startAuthorization('openid fhirUser user/AuditEvent.rs');
    await suite.signIn('new.auditor', 'auditor-password');
    await suite.page.waitForSelector(ALLOW);
    const body = await allow(verifier);
    assert.equal((await read('AuditEvent?_count=1', body.access_token)).status, 200);
  });

  it('tells a patient about "your record" in plain words', async () => {
    await suite.startAuthorization('launch/patient openid fhirUser patient/*.rs');
    await suite.signIn('amy', 'demo-password-3');
    await suite.page.waitForSelector(ALLOW);
    const text = await suite.page.locator('main').innerText();
    assert.match(text, /asks for the access below to your record/);
    assert.doesNotMatch(text, /the record of Amy/);
    assert.doesNotMatch(text, /PATRQT|patient requested|Patient or Practitioner/);
    assert.match(text, /Know that you are the patient whose record it is/);
    assert.match(text, /Know that the record it opens is yours/);
    assert.match(text, /You asked for it: it is your own record/);
  });

  it('shows one card for repeated grants of one app for one patient, with when, the patient and the scopes in words', async () => {
    for (let i = 0; i < 2; i++) {
      const { verifier } = await suite.startAuthorization('launch/patient openid fhirUser patient/*.rs');
      if (i === 0) await suite.signIn('amy', 'demo-password-3');
      await suite.page.waitForSelector(ALLOW);
      await allow(verifier);
    }
    await suite.page.goto(`${suite.server.issuer}/account/apps`);
    await suite.signIn('amy', 'demo-password-3');
    const cards = suite.page.locator('li.grant', { has: suite.page.getByRole('heading', { name: 'Growth Chart' }) });
    assert.equal(await cards.count(), 1, 'repeated grants of Growth Chart for Amy are shown apart');
    const card = await cards.innerText();
    assert.match(card, /Allowed 2 times, last on \d{4}-\d\d-\d\d \d\d:\d\d UTC, first on \d{4}-\d\d-\d\d \d\d:\d\d UTC/);
    assert.match(card, /Patient: Amy V\. Shaw \(pat-1\)/);
    assert.match(card, /Read and search all types of your data/);
    await cards.getByRole('button', { name: 'Revoke access' }).click();
    await suite.page.getByRole('status').waitFor();
    assert.equal(await suite.page.locator('li.grant', { has: suite.page.getByRole('heading', { name: 'Growth Chart' }) }).count(), 0, 'revoking the card revokes every grant in it');
  });
});
