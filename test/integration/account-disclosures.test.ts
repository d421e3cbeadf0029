// A patient's accounting of disclosures at /account/disclosures: signed in with the real /account
// login, the patient sees who accessed their records (and downloads CSV and PDF); a clinician is
// refused; a visitor is sent to the login. The routes are mounted on a small Koa app next to the
// real server (its database, users, clients, cookie keys and audit store), with fixture events appended to its trail.
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { startTestServer, type TestServer } from '../support/server.ts';
import { Browser, form, hiddenValue } from '../support/oauth.ts';
import { accountRoutes } from '../../server/portal/account.ts';
import type { DisclosureFormat } from '../../server/portal/disclosures.ts';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { disclosureRoutes as routes, PAGE_SIZE, REPORT_CLIENT } from '../../server/portal/disclosures.ts';
import type { AuditEvent } from '../../server/audit/types.ts';
import { emergencyOverrideStarted } from '../../server/audit/balp.ts';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const XSS = '<img src=x onerror=alert(1)>';
/** The reason a clinician typed when breaking the glass: for the privacy office, not the patient. */
const BTG_REASON = 'Paged by nurse Kim Lee: unconscious';
let n = 0;

/** A guarded FHIR access as the BALP builders write it. */
function access(f: {
  patient: string; resources: string[]; requestId: string; recorded: string; client: string;
  user?: { id: string; name?: string; roles?: { code: string; display?: string }[] }; purpose?: string; outcome?: string; test?: boolean; interaction?: string;
}): AuditEvent {
  n += 1;
  return {
    resourceType: 'AuditEvent',
    id: `disclosure-${n}-${Date.now()}`,
    type: { code: 'rest' },
    subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: f.interaction ?? 'read' }],
    action: 'R',
    recorded: f.recorded,
    outcome: f.outcome ?? '0',
    agent: [
      { type: { coding: [{ system: DCM, code: '110152' }] }, requestor: false, who: { identifier: { value: f.client } }, network: { address: '203.0.113.9', type: '2' } },
      { type: { coding: [{ system: DCM, code: '110150' }] }, requestor: !f.user, who: { identifier: { value: f.client } } },
      ...(f.user ? [{
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, requestor: true,
        who: { identifier: { value: f.user.id } }, ...(f.user.name && { name: f.user.name }),
        ...(f.user.roles && { role: f.user.roles.map((r) => ({ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', ...r }] })) }),
        purposeOfUse: [{ coding: [{ system: ACT_REASON, code: f.purpose ?? 'TREAT' }] }],
      }, {
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleClass', code: 'PROV' }] }, requestor: false, who: { display: 'Example Hospital' },
      }] : []),
    ],
    entity: [
      { what: { reference: `Patient/${f.patient}` }, role: { code: '1' } },
      ...f.resources.map((r) => ({ what: { reference: r }, role: { code: '4' }, ...(f.test && { securityLabel: [{ system: ACT_REASON, code: 'HTEST' }] }) })),
      { what: { identifier: { value: f.requestId } }, type: { code: 'XrequestId' } },
    ],
  };
}

describe('account: accounting of disclosures (/account/disclosures)', () => {
  let server: TestServer;
  let page: Server;
  let base: string;
  let amyId: string;
  let clientId: string;
  const reads: [string, string, DisclosureFormat][] = [];
  let failReads = false;

  before(async () => {
    server = await startTestServer();
    amyId = (await server.db('users').where('username', 'amy').first('id')).id;
    clientId = (await server.addClient({ name: XSS, auth: { kind: 'secret' } })).client_id;
    const doctor = { id: 'u-doc', name: 'Jane Smith, MD', roles: [{ code: 'doctor', display: 'Doctor' }] };
    await server.audit.append([
      access({ patient: 'pat-1', resources: ['Observation/obs-1'], requestId: 'req-1', recorded: '2025-06-02T08:00:00Z', client: clientId, user: doctor }),
      access({ patient: 'pat-1', resources: ['Observation/obs-2'], requestId: 'req-1', recorded: '2025-06-02T08:00:00Z', client: clientId, user: doctor }),
      emergencyOverrideStarted({
        issuer: server.issuer, recorded: new Date('2025-06-03T08:59:00Z'), user: { sub: doctor.id, name: doctor.name, roles: [] },
        clientId: 'er-app', purpose: 'BTG', reason: BTG_REASON, jti: 'btg-jti', patient: 'pat-1',
      }),
      access({ patient: 'pat-1', resources: ['Condition/cond-1'], requestId: 'req-2', recorded: '2025-06-03T09:00:00Z', client: 'er-app', user: doctor, purpose: 'BTG' }),
      access({ patient: 'pat-1', resources: ['Patient/pat-1'], requestId: 'req-3', recorded: '2025-06-04T10:00:00Z', client: 'bulk-export' }),
      access({ patient: 'pat-1', resources: ['MedicationRequest/med-1'], requestId: 'req-4', recorded: '2025-06-05T11:00:00Z', client: 'portal-app', user: { id: amyId, name: 'Amy Shaw' }, purpose: 'PATRQT' }),
      access({ patient: 'pat-1', resources: ['Observation/refused-1'], requestId: 'req-5', recorded: '2025-06-05T12:00:00Z', client: clientId, user: doctor, outcome: '4' }),
      access({ patient: 'pat-1', resources: ['Observation/test-1'], requestId: 'req-6', recorded: '2025-06-05T13:00:00Z', client: clientId, user: doctor, test: true }),
      access({ patient: 'pat-2', resources: ['Observation/other-1'], requestId: 'req-7', recorded: '2025-06-05T14:00:00Z', client: clientId, user: doctor }),
      access({ patient: 'pat-1', resources: ['AuditEvent'], requestId: 'req-8', recorded: '2025-06-05T15:00:00Z', client: REPORT_CLIENT, user: { id: amyId }, purpose: 'PATRQT', interaction: 'search-type' }),
    ]);
    const app = new Koa({ keys: server.config.cookieSecrets, proxy: true });
    app.silent = true; // the failing-audit case throws on purpose
    const patients = { get: async (id: string) => (id === 'pat-1' ? { name: 'Amy Shaw' } : undefined) };
    app.use(accountRoutes({ config: server.config, db: server.db, host: server.host }).routes());
    app.use(routes({
      config: server.config, db: server.db, audit: server.audit, patients,
      onRead(userId, patientId, format) {
        if (failReads) throw new Error('the audit trail is unavailable');
        reads.push([userId, patientId, format]);
      },
    }).routes());
    page = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => page.once('listening', resolve));
    base = `http://127.0.0.1:${(page.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise((resolve) => page.close(resolve));
    await server.stop();
  });
  beforeEach(() => {
    reads.length = 0;
    failReads = false;
  });

  async function signIn(username: string, password: string, returnTo = '/account/disclosures'): Promise<Browser> {
    const browser = new Browser();
    const login = await browser.fetch(`${base}/account/login?return_to=${encodeURIComponent(returnTo)}`);
    const html = await login.text();
    const res = await browser.fetch(`${base}/account/login`, {
      method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), username, password, return_to: hiddenValue(html, 'return_to') }),
    });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), returnTo);
    return browser;
  }

  it('sends a visitor without a session to the login page, and back to the report after login', async () => {
    for (const path of ['/account/disclosures', '/account/disclosures.csv', '/account/disclosures.pdf']) {
      const res = await fetch(`${base}${path}`, { redirect: 'manual' });
      assert.equal(res.status, 303, path);
      assert.equal(res.headers.get('location'), '/account/login?return_to=%2Faccount%2Fdisclosures', path);
    }
    const browser = await signIn('amy', 'demo-password-3');
    assert.equal((await browser.fetch(`${base}/account/disclosures`)).status, 200);
  });

  it('shows the patient who accessed their records: one line per request, refused and test accesses left out', async () => {
    const browser = await signIn('amy', 'demo-password-3');
    const res = await browser.fetch(`${base}/account/disclosures`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const html = await res.text();
    assert.match(html, /Who accessed your records/);
    assert.match(html, /Amy Shaw/);
    for (const r of ['Observation/obs-1', 'Observation/obs-2', 'Condition/cond-1', 'Patient/pat-1', 'MedicationRequest/med-1']) assert.ok(html.includes(r), r);
    for (const r of ['refused-1', 'test-1', 'other-1', 'AuditEvent']) assert.equal(html.includes(r), false, `${r} is not listed`);
    assert.match(html, /attempts that were refused gave nothing away/, 'the page says what it lists');
    assert.match(html, /Your own visits to this page are not listed/);
    assert.match(html, /<td data-label="From">203\.0\.113\.9<\/td>/, 'where');
    const detail = html.slice(html.indexOf('Every access'));
    assert.equal((detail.match(/<tr/g) ?? []).length - 1, 4, 'four requests (req-1 merges two events)');
    assert.match(html, /Doctor, Example Hospital/);
    assert.match(html, /<td data-label="Who">you<\/td>/, 'what the patient read through their own app');
    assert.match(html, />system</);
    assert.match(html, /class="flag">break-the-glass/);
    assert.match(html, /emergency treatment|break the glass/);
    assert.match(html, /break-the-glass<\/strong>: emergency access/);
    assert.equal(html.includes('Kim Lee'), false, 'not the break-the-glass reason (BTG_REASON)');
    assert.equal(html.includes('Jane Smith'), false, 'staff are shown by role and organization, not by name');
    assert.equal(html.includes(XSS), false, 'the app name is escaped');
    assert.ok(html.includes(`&lt;img src=x onerror=alert(1)&gt; (${clientId})`), 'the registered app name, with its client id');
    assert.match(html, /href="\/account\/disclosures\.csv"/);
    assert.match(html, /href="\/account\/disclosures\.pdf"/);
    assert.doesNotMatch(html, /rel="next"|rel="prev"/, 'one page');
    assert.deepEqual(reads, [[amyId, 'pat-1', 'html']], 'reading the report is reported to the audit hook');
  });

  it('refuses a clinician: the report is only for patients', async () => {
    const browser = await signIn('dr.smith', 'demo-password-1');
    for (const path of ['/account/disclosures', '/account/disclosures.csv', '/account/disclosures.pdf']) {
      const res = await browser.fetch(`${base}${path}`);
      assert.equal(res.status, 403, path);
      const body = await res.text();
      assert.match(body, /Only for patients/, path);
      assert.equal(body.includes('Observation/obs-1'), false);
    }
    assert.deepEqual(reads, []);
  });

  it('downloads the report as CSV', async () => {
    const browser = await signIn('amy', 'demo-password-3');
    const res = await browser.fetch(`${base}/account/disclosures.csv`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /^text\/csv/);
    assert.match(res.headers.get('content-disposition')!, /^attachment; filename="disclosures-pat-1-\d{4}-\d{2}-\d{2}\.csv"$/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const rows = (await res.text()).trimEnd().split('\r\n');
    assert.equal(rows[0], 'date,recipient_role,recipient_organization,app,purpose_of_use,action,resources,break_glass,request_id,network_address,outcome,deidentified');
    assert.equal(rows.length, 5);
    assert.equal(rows[1], `2025-06-02T08:00:00.000Z,Doctor,Example Hospital,${XSS} (${clientId}),TREAT,read,Observation/obs-1 Observation/obs-2,false,req-1,203.0.113.9,disclosed,false`);
    assert.ok(rows.some((r) => r.includes(',BTG,') && r.includes(',true,req-2,')));
    assert.ok(rows.every((r) => !r.includes('Kim Lee')), 'not the break-the-glass reason');
    assert.deepEqual(reads, [[amyId, 'pat-1', 'csv']]);
  });

  it('downloads the report as PDF: tagged, with the patient\'s name, the apps\' names and page numbers', async () => {
    const browser = await signIn('amy', 'demo-password-3');
    const res = await browser.fetch(`${base}/account/disclosures.pdf`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/pdf');
    assert.match(res.headers.get('content-disposition')!, /^attachment; filename="disclosures-pat-1-\d{4}-\d{2}-\d{2}\.pdf"$/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const pdf = Buffer.from(await res.arrayBuffer());
    assert.equal(pdf.subarray(0, 5).toString('latin1'), '%PDF-');
    assert.match(pdf.toString('latin1'), /\/StructTreeRoot/, 'a tagged PDF');
    assert.match(pdf.toString('latin1'), /\/Marked true/);
    assert.deepEqual(reads, [[amyId, 'pat-1', 'pdf']]);
    const file = join(mkdtempSync(join(tmpdir(), 'disclosures-')), 'r.pdf');
    writeFileSync(file, pdf);
    const text = execFileSync('pdftotext', [file, '-'], { encoding: 'utf8' });
    assert.match(text, /Amy Shaw \(pat-1\)/);
    assert.ok(text.includes(`${XSS} (${clientId})`), 'the registered app\'s client_name');
    assert.match(text, /page 1/);
    assert.match(text, /from 203\.0\.113\.9/, 'where');
    assert.equal(text.includes('refused-1'), false);
    assert.match(text, /\[BREAK THE GLASS\]/);
    assert.equal(text.includes('Kim Lee'), false, 'not the break-the-glass reason');
  });

  describe('at volume', () => {
    before(async () => {
      // 250 more accesses in 2026, one a day, by two apps in turn.
      const doctor = { id: 'u-doc', roles: [{ code: 'doctor', display: 'Doctor' }] };
      await server.audit.append(Array.from({ length: 250 }, (_, i) => access({
        patient: 'pat-1', resources: [`Observation/bulk-${i}`], requestId: `bulk-${i}`, client: i % 2 ? clientId : 'er-app', user: doctor,
        recorded: new Date(Date.UTC(2026, 0, 1) + i * 86_400_000).toISOString(),
      })));
    });
    const rowsOf = (html: string) => [...html.slice(html.indexOf('Every access')).matchAll(/<td data-label="Records"><code>Observation\/bulk-(\d+)<\/code>/g)].map((m) => Number(m[1]));
    const link = (html: string, rel: string) => new RegExp(`rel="${rel}" href="([^"]+)"`).exec(html)?.[1]?.replace(/&amp;/g, '&');

    it('pages newest first, at most PAGE_SIZE lines a page, older and newer', async () => {
      const browser = await signIn('amy', 'demo-password-3');
      const first = await (await browser.fetch(`${base}/account/disclosures`)).text();
      assert.deepEqual(rowsOf(first), Array.from({ length: PAGE_SIZE }, (_, i) => 249 - i));
      assert.equal(link(first, 'prev'), undefined);
      assert.match(first, /255 accesses/, 'the summary counts every disclosure, in the database');
      const second = await (await browser.fetch(`${base}${link(first, 'next')}`)).text();
      assert.deepEqual(rowsOf(second), Array.from({ length: PAGE_SIZE }, (_, i) => 149 - i));
      const third = await (await browser.fetch(`${base}${link(second, 'next')}`)).text();
      assert.deepEqual(rowsOf(third).slice(0, 50), Array.from({ length: 50 }, (_, i) => 49 - i));
      assert.equal(link(third, 'next'), undefined, 'the oldest page (with the 2025 accesses)');
      const back = await (await browser.fetch(`${base}${link(third, 'prev')}`)).text();
      assert.deepEqual(rowsOf(back), rowsOf(second), 'newer goes back to the same page');
    });

    it('filters by period and by app, and the downloads follow the filter', async () => {
      const browser = await signIn('amy', 'demo-password-3');
      const html = await (await browser.fetch(`${base}/account/disclosures?from=2026-01-11&to=2026-01-20&app=${clientId}`)).text();
      assert.deepEqual(rowsOf(html), [19, 17, 15, 13, 11]);
      assert.match(html, /5 accesses for what you selected/);
      assert.match(html, new RegExp(`<option value="${clientId}" selected>`));
      const csv = await (await browser.fetch(`${base}/account/disclosures.csv?from=2026-01-11&to=2026-01-20&app=${clientId}`)).text();
      assert.deepEqual(csv.trimEnd().split('\r\n').slice(1).map((r) => r.split(',')[8]), ['bulk-11', 'bulk-13', 'bulk-15', 'bulk-17', 'bulk-19']);
      const all = (await (await browser.fetch(`${base}/account/disclosures.csv`)).text()).trimEnd().split('\r\n');
      assert.equal(all.length, 1 + 4 + 250, 'the whole report, streamed');
    });

    it('refuses filters that make no sense, without showing anything', async () => {
      const browser = await signIn('amy', 'demo-password-3');
      for (const query of ['from=yesterday', 'from=2026-02-01&to=2026-01-01', 'before=abc', 'after=-1', `app=${'x'.repeat(201)}`]) {
        for (const path of ['/account/disclosures', '/account/disclosures.csv', '/account/disclosures.pdf']) {
          const res = await browser.fetch(`${base}${path}?${query}`);
          assert.equal(res.status, 400, `${path}?${query}`);
          const body = await res.text();
          assert.match(body, /This report cannot be shown/);
          assert.equal(body.includes('bulk-'), false);
        }
      }
      assert.deepEqual(reads, [], 'nothing was read');
    });
  });

  it('shows nothing when reading the report cannot be audited', async () => {
    const browser = await signIn('amy', 'demo-password-3');
    failReads = true;
    for (const path of ['/account/disclosures', '/account/disclosures.csv', '/account/disclosures.pdf']) {
      const res = await browser.fetch(`${base}${path}`);
      assert.equal(res.status, 500, path);
      assert.equal((await res.text()).includes('Observation/obs-1'), false, path);
    }
  });
});
