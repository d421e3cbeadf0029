// The authorization pages in a real browser: login, patient picker, consent, back to the app.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromiumSuite } from '../support/browser.ts';

const SCREENSHOTS = fileURLToPath(new URL('../../var/screenshots/', import.meta.url));
const LAB = 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const ALLOW = 'button[name=decision][value=allow]';
const DENY = 'button[name=decision][value=deny]';
const PICKER = 'input[type=radio][name=patient]';

describe('authorization pages in Chromium', function () {
  this.timeout(60_000);
  const suite = chromiumSuite({ app: { auth: { kind: 'public' } } });

  it('takes a clinician through login, picker and consent (standalone launch)', async () => {
    const { state, verifier } = await suite.startAuthorization('launch/patient openid fhirUser offline_access patient/*.rs');
    await suite.signIn('dr.smith', 'demo-password-1');

    await suite.page.check(`${PICKER}[value="pat-2"]`);
    await suite.page.getByRole('button', { name: 'Continue' }).click();

    await suite.page.waitForSelector(ALLOW);
    const boxes = suite.page.locator('input[type=checkbox][name=scope]');
    for (const scope of ['launch/patient', 'openid', 'fhirUser', 'offline_access', 'patient/*.rs']) {
      assert.equal(await boxes.and(suite.page.locator(`[value="${scope}"]`)).isChecked(), true, `${scope} is not ticked by default`);
    }
    mkdirSync(SCREENSHOTS, { recursive: true });
    await suite.page.screenshot({ path: `${SCREENSHOTS}consent.png`, fullPage: true });

    const back = await suite.backToApp(ALLOW);
    assert.equal(back.searchParams.get('state'), state);
    const { res, body } = await suite.exchange(back, verifier);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.patient, 'pat-2');
    assert.ok(body.refresh_token, 'no refresh_token');
  });

  it('lets a patient user narrow the consent to laboratory results', async () => {
    const { state, verifier } = await suite.startAuthorization('launch/patient openid fhirUser offline_access patient/*.rs');
    await suite.signIn('amy', 'demo-password-3');

    await suite.page.waitForSelector(ALLOW);
    assert.equal(await suite.page.locator(PICKER).count(), 0, 'a patient user was shown the patient picker');
    await suite.page.uncheck('input[type=checkbox][name=scope][value="patient/*.rs"]');
    const lab = suite.page.locator(`input[type=checkbox][name=scope][value="${LAB}"]`);
    assert.equal(await lab.isChecked(), false, 'the narrower alternative is ticked by default');
    await suite.page.locator('details', { has: lab }).locator('summary').click();
    await lab.check();

    const back = await suite.backToApp(ALLOW);
    assert.equal(back.searchParams.get('state'), state);
    const { res, body } = await suite.exchange(back, verifier);
    assert.equal(res.status, 200, JSON.stringify(body));
    const granted: string[] = body.scope.split(' ');
    assert.ok(granted.includes(LAB), `granted scope lacks the laboratory scope: ${body.scope}`);
    assert.ok(!granted.includes('patient/*.rs'), `granted scope still has patient/*.rs: ${body.scope}`);
    assert.equal(body.patient, 'pat-1');
  });

  it('sends access_denied with the state back to the app on Deny', async () => {
    const { state } = await suite.startAuthorization('launch/patient openid fhirUser patient/*.rs');
    await suite.signIn('amy', 'demo-password-3');

    const back = await suite.backToApp(DENY);
    assert.equal(back.searchParams.get('error'), 'access_denied');
    assert.equal(back.searchParams.get('state'), state);
    assert.equal(back.searchParams.get('code'), null);
  });

  it('shows the login form again with a generic message after a wrong password', async () => {
    await suite.startAuthorization('launch/patient openid fhirUser patient/*.rs');
    const loginUrl = new URL(suite.page.url());
    assert.equal(loginUrl.origin, suite.server.issuer);
    await suite.signIn('dr.smith', 'not-the-password');

    const alert = suite.page.getByRole('alert');
    await alert.waitFor();
    assert.equal((await alert.innerText()).trim(), 'The username or password is not correct.');
    assert.equal(new URL(suite.page.url()).origin, suite.server.issuer);
    assert.equal(new URL(suite.page.url()).pathname.split('/')[2], loginUrl.pathname.split('/')[2], 'a different interaction');
    assert.equal(await suite.page.locator('input[name=password]').count(), 1);
    assert.equal(await suite.page.locator('h1').innerText(), 'Sign in');
    const text = await suite.page.locator('body').innerText();
    assert.doesNotMatch(text, /Error:|\bat \S+ \(|\.ts:\d+/, `the page shows error internals:\n${text}`);

    // The form shown again works.
    await suite.signIn('dr.smith', 'demo-password-1');
    await suite.page.waitForSelector(PICKER);
  });
});
