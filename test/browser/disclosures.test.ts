// The patient's accounting of disclosures in a real browser on a phone-sized screen (375 px wide):
// no horizontal overflow of the page, and paging through a trail of a few thousand records.
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../support/server.ts';
import { launchChromium, requireChromium } from '../support/browser.ts';
import type { AuditEvent } from '../../server/audit/types.ts';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const RECORDS = 3000;

/** A disclosure of one Observation of pat-1 to a clinician, as the guard records it. */
const access = (i: number, client: string): AuditEvent => ({
  resourceType: 'AuditEvent',
  id: `phone-${i}-${Date.now()}`,
  type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
  subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: 'read' }],
  action: 'R',
  recorded: new Date(Date.UTC(2025, 0, 1) + i * 3_600_000).toISOString(),
  outcome: '0',
  agent: [
    { type: { coding: [{ system: DCM, code: '110152' }] }, requestor: false, who: { identifier: { value: client } }, network: { address: '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', type: '2' } },
    { type: { coding: [{ system: DCM, code: '110150' }] }, requestor: false, who: { identifier: { value: client } } },
    {
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, requestor: true, who: { identifier: { value: 'u-doc' } },
      role: [{ coding: [{ code: 'doctor', display: 'Doctor of internal medicine and cardiology' }] }],
      purposeOfUse: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }] }],
    },
    { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleClass', code: 'PROV' }] }, requestor: false, who: { display: 'Example University Hospital Department of Cardiology' } },
  ],
  entity: [
    { what: { reference: 'Patient/pat-1' }, role: { code: '1' } },
    { what: { reference: `Observation/a-rather-long-observation-identifier-${String(i).padStart(5, '0')}` }, role: { code: '4' } },
    { what: { identifier: { value: `phone-request-${i}-with-a-long-request-identifier-0123456789abcdef` } }, type: { code: 'XrequestId' } },
  ],
});

describe('accounting of disclosures in Chromium at 375 px', function () {
  this.timeout(120_000);
  let browser: Browser | undefined;
  let server: TestServer | undefined;
  let page: Page;

  before(async function () {
    requireChromium(this);
    server = await startTestServer();
    const client = (await server.addClient({ name: 'Growth Chart with a long name for small screens', auth: { kind: 'secret' } })).client_id;
    for (let i = 0; i < RECORDS; i += 500) {
      await server.audit.append(Array.from({ length: 500 }, (_, j) => access(i + j, (i + j) % 3 ? client : 'er-app')));
    }
    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 375, height: 812 }, deviceScaleFactor: 1 })).newPage();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  const dates = () => page.$$eval('table.disclosures:last-of-type td[data-label="When"]', (cells) => cells.map((c) => c.textContent!.trim()));

  it('fits the screen and pages through the trail, newest first', async () => {
    await page.goto(`${server!.issuer}/account/login?return_to=${encodeURIComponent('/account/disclosures')}`);
    await page.fill('input[name=username]', 'amy');
    await page.fill('input[name=password]', 'demo-password-3');
    await Promise.all([page.waitForURL(/\/account\/disclosures$/), page.click('button[type=submit]')]);
    assert.match(await page.textContent('h1') ?? '', /Who accessed your records/);
    assert.match(await page.textContent('body') ?? '', new RegExp(`${RECORDS} accesses`));

    let previous: string[] = [];
    for (let n = 0; n < 4; n++) {
      assert.ok(await overflow() <= 0, `page ${n + 1} does not overflow the screen horizontally (by ${await overflow()} px)`);
      const shown = await dates();
      assert.equal(shown.length, 100, `page ${n + 1} has 100 lines`);
      assert.deepEqual([...shown].sort().reverse(), shown, 'newest first');
      if (previous.length) assert.ok(shown[0] < previous[previous.length - 1], 'each page is older than the one before');
      previous = shown;
      await Promise.all([page.waitForURL(/before=/), page.click('a[rel=next]')]);
    }
    await Promise.all([page.waitForURL(/after=/), page.click('a[rel=prev]')]);
    assert.deepEqual(await dates(), previous, 'newer goes back');
    assert.ok(await overflow() <= 0);

    await page.fill('input[name=from]', '2025-01-02');
    await page.fill('input[name=to]', '2025-01-02');
    await Promise.all([page.waitForURL(/from=2025-01-02/), page.click('form.filters button[type=submit]')]);
    assert.equal((await dates()).length, 24, 'one day of hourly accesses');
    assert.ok(await overflow() <= 0);
  });
});
