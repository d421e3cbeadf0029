// A patient's accounting of disclosures at /account/disclosures: signed in with the real /account
// login, the patient sees who accessed their records (and downloads CSV and PDF); a clinician is
// refused; a visitor is sent to the login. The routes are mounted on a small Koa app next to the
// real server (its database, users, clients and cookie keys), with an AuditStore of fixture events.
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { startTestServer, type TestServer } from '../support/server.ts';
import { Browser, form, hiddenValue } from '../support/oauth.ts';
import { accountRoutes } from '../../server/portal/account.ts';
import { disclosureRoutes, type DisclosureFormat } from '../../server/portal/disclosures.ts';
import type { AuditEvent, AuditSearch, AuditStore } from '../../server/audit/types.ts';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const XSS = '<img src=x onerror=alert(1)>';
let n = 0;

/** A guarded FHIR access as the BALP builders write it. */
function access(f: {
  patient: string; resources: string[]; requestId: string; recorded: string; client: string;
  user?: { id: string; name?: string; roles?: { code: string; display?: string }[] }; purpose?: string; outcome?: string; test?: boolean; interaction?: string;
}): AuditEvent {
  n += 1;
  return {
    resourceType: 'AuditEvent',
    id: `evt-${n}`,
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

/** An AuditStore answering searches from fixture events (the real store is wired by app.ts). */
function fixtureStore(events: AuditEvent[]): AuditStore & { searches: AuditSearch[] } {
  const patientOf = (e: AuditEvent) => (e.entity as { what?: { reference?: string }; role?: { code?: string } }[])
    .find((x) => x.role?.code === '1')?.what?.reference?.replace(/^Patient\//, '');
  const searches: AuditSearch[] = [];
  const unused = () => Promise.reject(new Error('not used by the disclosures page'));
  return {
    searches,
    async search(filter) {
      searches.push(filter);
      return events.filter((e) => (!filter.patient || patientOf(e) === filter.patient) && (!filter.outcome || e.outcome === filter.outcome));
    },
    append: unused, verify: unused, checkpoint: unused, purge: unused, hold: unused, release: unused, holds: unused, close: async () => {},
  };
}

describe('account: accounting of disclosures (/account/disclosures)', () => {
  let server: TestServer;
  let page: Server;
  let base: string;
  let amyId: string;
  let clientId: string;
  let store: ReturnType<typeof fixtureStore>;
  const reads: [string, string, DisclosureFormat][] = [];
  let failReads = false;

  before(async () => {
    server = await startTestServer();
    amyId = (await server.db('users').where('username', 'amy').first('id')).id;
    clientId = (await server.addClient({ name: XSS, auth: { kind: 'secret' } })).client_id;
    const doctor = { id: 'u-doc', name: 'Jane Smith, MD', roles: [{ code: 'doctor', display: 'Doctor' }] };
    store = fixtureStore([
      access({ patient: 'pat-1', resources: ['Observation/obs-1'], requestId: 'req-1', recorded: '2025-06-02T08:00:00Z', client: clientId, user: doctor }),
      access({ patient: 'pat-1', resources: ['Observation/obs-2'], requestId: 'req-1', recorded: '2025-06-02T08:00:00Z', client: clientId, user: doctor }),
      access({ patient: 'pat-1', resources: ['Condition/cond-1'], requestId: 'req-2', recorded: '2025-06-03T09:00:00Z', client: 'er-app', user: doctor, purpose: 'BTG' }),
      access({ patient: 'pat-1', resources: ['Patient/pat-1'], requestId: 'req-3', recorded: '2025-06-04T10:00:00Z', client: 'bulk-export' }),
      access({ patient: 'pat-1', resources: ['MedicationRequest/med-1'], requestId: 'req-4', recorded: '2025-06-05T11:00:00Z', client: 'portal-app', user: { id: amyId, name: 'Amy Shaw' }, purpose: 'PATRQT' }),
      access({ patient: 'pat-1', resources: ['Observation/refused-1'], requestId: 'req-5', recorded: '2025-06-05T12:00:00Z', client: clientId, user: doctor, outcome: '4' }),
      access({ patient: 'pat-1', resources: ['Observation/test-1'], requestId: 'req-6', recorded: '2025-06-05T13:00:00Z', client: clientId, user: doctor, test: true }),
      access({ patient: 'pat-2', resources: ['Observation/other-1'], requestId: 'req-7', recorded: '2025-06-05T14:00:00Z', client: clientId, user: doctor }),
    ]);
    const app = new Koa({ keys: server.config.cookieSecrets, proxy: true });
    app.silent = true; // the failing-audit case throws on purpose
    const patients = { get: async (id: string) => (id === 'pat-1' ? { name: 'Amy Shaw' } : undefined) };
    app.use(accountRoutes({ config: server.config, db: server.db, host: server.host }).routes());
    app.use(disclosureRoutes({
      config: server.config, db: server.db, audit: store, patients,
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
    assert.equal(store.searches.every((s) => s.patient === 'pat-1'), true, 'the store is asked for the patient\'s events only');
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
    for (const r of ['refused-1', 'test-1', 'other-1']) assert.equal(html.includes(r), false, `${r} is not listed`);
    const detail = html.slice(html.indexOf('Every access'));
    assert.equal((detail.match(/<tr/g) ?? []).length - 1, 4, 'four requests (req-1 merges two events)');
    assert.match(html, /Doctor, Example Hospital/);
    assert.match(html, /patient \(self\)/);
    assert.match(html, />system</);
    assert.match(html, /class="flag">break-the-glass/);
    assert.match(html, /emergency treatment|break the glass/);
    assert.equal(html.includes('Jane Smith'), false, 'staff are shown by role and organization, not by name');
    assert.equal(html.includes(XSS), false, 'the app name is escaped');
    assert.ok(html.includes(`&lt;img src=x onerror=alert(1)&gt; (${clientId})`), 'the registered app name, with its client id');
    assert.match(html, /href="\/account\/disclosures\.csv"/);
    assert.match(html, /href="\/account\/disclosures\.pdf"/);
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
    assert.equal(rows[0], 'date,recipient_role,recipient_organization,app,purpose_of_use,action,resources,break_glass,request_id,network_address,outcome');
    assert.equal(rows.length, 5);
    assert.equal(rows[1], `2025-06-02T08:00:00.000Z,Doctor,Example Hospital,${XSS} (${clientId}),TREAT,read,Observation/obs-1 Observation/obs-2,false,req-1,203.0.113.9,disclosed`);
    assert.ok(rows.some((r) => r.includes(',BTG,') && r.includes(',true,req-2,')));
    assert.deepEqual(reads, [[amyId, 'pat-1', 'csv']]);
  });

  it('downloads the report as PDF', async () => {
    const browser = await signIn('amy', 'demo-password-3');
    const res = await browser.fetch(`${base}/account/disclosures.pdf`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/pdf');
    assert.match(res.headers.get('content-disposition')!, /^attachment; filename="disclosures-pat-1-\d{4}-\d{2}-\d{2}\.pdf"$/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const pdf = Buffer.from(await res.arrayBuffer());
    assert.equal(pdf.subarray(0, 5).toString('latin1'), '%PDF-');
    assert.deepEqual(reads, [[amyId, 'pat-1', 'pdf']]);
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
