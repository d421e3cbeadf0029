// The accounting of disclosures: report lines from BALP AuditEvents (one per request, successful
// accesses only, no test data, break-the-glass flagged, staff names hidden), the grouped summary,
// and the CSV, JSON, FHIR and PDF renderings.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import type { AuditEvent } from '../../server/audit/types.ts';
import { emergencyOverrideStarted } from '../../server/audit/balp.ts';
import {
  breakGlassJtisOf, DISCLOSURE_COLUMNS, disclosureEvents, disclosureLines, isDisclosure, streamLines, summaryOf, type DisclosureLine,
} from '../../server/audit/disclosures.ts';
import { pdfText, reportObjects, toCsv, toFhirBundle, toJson, toPdf } from '../../server/audit/render.ts';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const ISSUER = 'https://auth.example.org';
let counter = 0;

export interface AccessFixture {
  recorded?: string;
  requestId?: string | null;
  interaction?: string;
  action?: string;
  outcome?: string;
  patient?: string;
  resources?: string[];
  query?: string;
  user?: { id: string; name?: string; roles?: { system?: string; code: string; display?: string }[] } | null;
  purposes?: string[];
  organization?: string;
  client?: string;
  address?: string;
  labels?: { system: string; code: string }[];
  jti?: string;
}

/** A guarded FHIR access as the BALP builders write it. */
function access(f: AccessFixture = {}): AuditEvent {
  counter += 1;
  const patient = f.patient ?? 'pat-1';
  const user = f.user === undefined ? { id: 'u-doc', name: 'Jane Smith, MD', roles: [{ system: 'http://terminology.hl7.org/CodeSystem/practitioner-role', code: 'doctor', display: 'Doctor' }] } : f.user;
  const purposes = (f.purposes ?? ['TREAT']).map((code) => ({ coding: [{ system: ACT_REASON, code }] }));
  const interaction = f.interaction ?? 'read';
  return {
    resourceType: 'AuditEvent',
    id: `evt-${counter}`,
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
    subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: interaction }],
    action: f.action ?? (interaction.startsWith('search') ? 'E' : 'R'),
    recorded: f.recorded ?? '2025-06-02T14:03:11.482Z',
    outcome: f.outcome ?? '0',
    agent: [
      { type: { coding: [{ system: DCM, code: '110153' }] }, requestor: false, who: { reference: 'Device/fhir-rs' }, network: { address: 'https://fhir.example.org/r4', type: '5' } },
      { type: { coding: [{ system: DCM, code: '110152' }] }, requestor: false, who: { identifier: { value: f.client ?? 'growth-app' } }, network: { address: f.address ?? '203.0.113.17', type: '2' } },
      { type: { coding: [{ system: DCM, code: '110150', display: 'Application' }] }, requestor: !user, who: { identifier: { system: ISSUER, value: f.client ?? 'growth-app' } },
        ...(!user && f.jti && { policy: [`urn:ietf:params:oauth:jti:${f.jti}`] }), ...(!user && { purposeOfUse: purposes }) },
      ...(user ? [{
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] },
        requestor: true,
        who: { identifier: { system: ISSUER, value: user.id } },
        ...(user.name && { name: user.name }),
        ...(user.roles?.length && { role: user.roles.map((r) => ({ coding: [r] })) }),
        ...(f.jti && { policy: [`urn:ietf:params:oauth:jti:${f.jti}`] }),
        purposeOfUse: purposes,
      }] : []),
      ...(f.organization === '' ? [] : [{
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleClass', code: 'PROV' }] },
        requestor: false, who: { display: f.organization ?? 'Example Hospital' },
      }]),
    ],
    source: { observer: { reference: 'Device/fhir-rs' } },
    entity: [
      { what: { reference: `Patient/${patient}` }, type: { code: '1' }, role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1' } },
      ...(f.resources ?? ['Observation/obs-1']).map((r) => ({
        what: { reference: r }, type: { code: '2' }, role: { code: '4' }, ...(f.labels && { securityLabel: f.labels }),
      })),
      ...(f.query ? [{ type: { code: '2' }, role: { code: '24' }, description: f.query }] : []),
      ...(f.requestId === null ? [] : [{
        what: { identifier: { value: f.requestId ?? `req-${counter}` } },
        type: { system: 'https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType', code: 'XrequestId' },
      }]),
    ],
  };
}

/** The text a PDF shows with the standard fonts: the hex strings of every TJ, stream by stream. */
function pdfShownText(pdf: Buffer): string {
  const raw = pdf.toString('latin1');
  const out: string[] = [];
  for (const m of raw.matchAll(/stream\r?\n/g)) {
    const start = m.index! + m[0].length;
    const end = raw.indexOf('endstream', start);
    const bytes = pdf.subarray(start, end);
    let content: string;
    try {
      content = inflateSync(bytes).toString('latin1');
    } catch {
      content = bytes.toString('latin1');
    }
    for (const tj of content.matchAll(/\[([^\]]*)\]\s*TJ/g)) {
      out.push([...tj[1].matchAll(/<([0-9a-fA-F]*)>/g)].map((h) => Buffer.from(h[1], 'hex').toString('latin1')).join(''));
    }
  }
  return out.join('\n');
}

const hasTool = (tool: string) => spawnSync(tool, ['-v'], { stdio: 'ignore' }).error === undefined;

describe('audit: accounting of disclosures (report lines)', () => {
  it('gives one line per request: copies and the events of one request for several resources merge', () => {
    const lines = disclosureLines([
      access({ requestId: 'req-A', resources: ['Observation/obs-1'] }),
      access({ requestId: 'req-A', resources: ['Observation/obs-1', 'Observation/obs-2'] }),
      access({ requestId: 'req-A', resources: ['Observation/obs-3/_history/2'] }),
      access({ requestId: 'req-B', resources: ['Condition/c-1'], recorded: '2025-06-02T15:00:00.000Z' }),
      access({ requestId: null, resources: ['Encounter/e-1'], recorded: '2025-06-01T09:00:00.000Z' }),
    ]);
    assert.equal(lines.length, 3);
    const a = lines.find((l) => l.request_id === 'req-A')!;
    assert.equal(a.resources, 'Observation/obs-1 Observation/obs-2 Observation/obs-3', 'merged, unique, without versions');
    assert.match(lines[0].request_id, /^evt-/, 'without an X-Request-Id, the event id stands for the request');
    assert.deepEqual(lines.map((l) => l.date), [...lines.map((l) => l.date)].sort(), 'chronological');
  });

  it('keeps a request id sent again at another time on a line of its own: the client chooses the id, the access its time', () => {
    const lines = disclosureLines([
      access({ requestId: 'req-again', jti: 'jti-1', resources: ['Observation/obs-1'], recorded: '2025-06-02T14:00:00.000Z' }),
      access({ requestId: 'req-again', jti: 'jti-1', interaction: 'search-type', resources: ['Observation/obs-2'], recorded: '2025-06-02T14:30:00.000Z' }),
    ]);
    assert.deepEqual(lines.map((l) => [l.date, l.action, l.resources]), [
      ['2025-06-02T14:00:00.000Z', 'read', 'Observation/obs-1'], ['2025-06-02T14:30:00.000Z', 'search', 'Observation/obs-2'],
    ]);
  });

  it('lists only successful guarded accesses about the patient: refused, failed and other events are left out', () => {
    const alert = emergencyOverrideStarted({
      issuer: ISSUER, recorded: new Date('2025-06-02T14:00:00Z'), user: { sub: 'u-er', roles: [] }, clientId: 'er-app', purpose: 'BTG', reason: 'unconscious', patient: 'pat-1',
    });
    const events = [
      access({ requestId: 'ok' }),
      access({ requestId: 'refused', outcome: '4' }),
      access({ requestId: 'failed', outcome: '8' }),
      access({ requestId: 'other-patient', patient: 'pat-2' }),
      alert,
    ];
    assert.deepEqual(disclosureLines(events, { patient: 'pat-1' }).map((l) => l.request_id), ['ok']);
    assert.deepEqual(disclosureLines(events).map((l) => l.request_id), ['ok', 'other-patient'], 'without the option, every patient\'s successful accesses');
    assert.equal(isDisclosure(alert), false, 'a security alert is not a disclosure line');
    assert.deepEqual(disclosureEvents(events, { patient: 'pat-1' }).map((e) => e.id), [events[0].id]);
    const attempts = disclosureLines(events, { patient: 'pat-1', attempts: true });
    assert.deepEqual(attempts.map((l) => [l.request_id, l.outcome]), [['failed', 'failed'], ['ok', 'disclosed'], ['refused', 'refused']], 'the privacy office\'s report of attempts');
    assert.deepEqual(disclosureEvents(events, { patient: 'pat-1', attempts: true }).map((e) => e.id), events.slice(0, 3).map((e) => e.id));
  });

  it('excludes test data: purpose of use HTEST, or an entity labelled HTEST', () => {
    const lines = disclosureLines([
      access({ requestId: 'real' }),
      access({ requestId: 'test-purpose', purposes: ['HTEST'] }),
      access({ requestId: 'test-label', labels: [{ system: ACT_REASON, code: 'HTEST' }] }),
      access({ requestId: 'normal-label', labels: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' }] }),
    ]);
    assert.deepEqual(lines.map((l) => l.request_id).sort(), ['normal-label', 'real']);
  });

  it('says when the data went out de-identified: an entity labelled v3-ObservationValue PSEUDED', () => {
    const pseuded = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'PSEUDED' };
    const lines = disclosureLines([
      access({ requestId: 'plain' }),
      access({ requestId: 'research', purposes: ['HRESCH'], labels: [pseuded] }),
      access({ requestId: 'other-system', labels: [{ system: 'urn:other', code: 'PSEUDED' }] }),
    ]);
    assert.deepEqual(lines.map((l) => [l.request_id, l.deidentified]).sort(), [['other-system', false], ['plain', false], ['research', true]]);
  });

  it('flags break-the-glass: purpose BTG or ETREAT, or a token issued under a BTG security alert', () => {
    const alert = emergencyOverrideStarted({
      issuer: ISSUER, recorded: new Date('2025-06-02T13:59:00Z'), user: { sub: 'u-er', roles: [] }, clientId: 'er-app',
      purpose: 'TREAT', reason: 'unconscious', jti: 'jti-btg', patient: 'pat-1',
    });
    const lines = disclosureLines([
      access({ requestId: 'treat' }),
      access({ requestId: 'btg', purposes: ['BTG'] }),
      access({ requestId: 'etreat', purposes: ['ETREAT'] }),
      access({ requestId: 'btg-token', jti: 'jti-btg' }),
      access({ requestId: 'other-token', jti: 'jti-other' }),
      alert,
    ]);
    const flag = Object.fromEntries(lines.map((l) => [l.request_id, l.break_glass]));
    assert.deepEqual(flag, { treat: false, btg: true, etreat: true, 'btg-token': true, 'other-token': false });
    assert.equal(lines.find((l) => l.request_id === 'btg')!.purpose_of_use, 'BTG');
  });

  it('describes the recipient by role and organization, not by name (unless names are asked for)', () => {
    const events = [
      access({ requestId: 'doc', address: '198.51.100.7' }),
      access({ requestId: 'nurse', user: { id: 'u-n', name: 'Nina Nurse', roles: [{ code: 'nurse' }] }, organization: '' }),
      access({ requestId: 'backend', user: null, client: 'bulk-exporter', purposes: ['HOPERAT'] }),
      access({ requestId: 'self', user: { id: 'u-amy', name: 'Amy Shaw' }, purposes: ['PATRQT'] }),
      access({ requestId: 'norole', user: { id: 'u-x', name: 'Xavier' } }),
    ];
    const lines = disclosureLines(events, { selfUserIds: ['u-amy'], appNames: { 'growth-app': 'Growth Chart' } });
    const by = Object.fromEntries(lines.map((l) => [l.request_id, l]));
    assert.equal(by.doc.recipient_role, 'Doctor');
    assert.equal(by.doc.recipient_organization, 'Example Hospital');
    assert.equal(by.doc.app, 'Growth Chart');
    assert.equal(by.doc.network_address, '198.51.100.7', 'the client address, not the server\'s');
    assert.equal(by.doc.outcome, 'disclosed');
    assert.equal(by.doc.purpose_of_use, 'TREAT');
    assert.equal(by.nurse.recipient_role, 'nurse', 'the code when there is no display');
    assert.equal(by.nurse.recipient_organization, '');
    assert.equal(by.backend.recipient_role, 'system');
    assert.equal(by.backend.app, 'bulk-exporter', 'a client id without a name stays the id');
    assert.equal(by.backend.purpose_of_use, 'HOPERAT');
    assert.equal(by['self'].recipient_role, 'patient (self)');
    assert.equal(by.norole.recipient_role, 'user');

    const all = JSON.stringify(lines) + toCsv(lines) + toJson(lines);
    for (const name of ['Jane Smith', 'Nina Nurse', 'Xavier']) assert.equal(all.includes(name), false, `${name} hidden by default`);
    assert.equal(lines.some((l) => 'recipient_name' in l), false);
    const named = disclosureLines(events, { names: true });
    assert.equal(named.find((l) => l.request_id === 'doc')!.recipient_name, 'Jane Smith, MD');
    assert.equal(toCsv(named).includes('Jane Smith'), false, 'the CSV keeps DESIGN\'s columns');
  });

  it('names the action and the resources (types and ids), never their content', () => {
    const lines = disclosureLines([
      access({ requestId: 'r', interaction: 'vread', resources: ['Observation/obs-9/_history/2'] }),
      access({ requestId: 's', interaction: 'search-type', resources: ['Observation/obs-1', 'Observation/obs-2'], query: 'GET https://fhir.example.org/r4/Observation?patient=pat-1&code=HIV' }),
      access({ requestId: 'empty', interaction: 'search-type', resources: [], query: 'GET https://fhir.example.org/r4/Condition?patient=pat-1&code=secret' }),
      access({ requestId: 'c', interaction: 'create', action: 'C', resources: ['https://fhir.example.org/r4/Observation/new-1'] }),
      access({ requestId: 'p', interaction: 'patch', action: 'U' }),
      access({ requestId: 'h', interaction: 'history-instance' }),
    ]);
    const by = Object.fromEntries(lines.map((l) => [l.request_id, l]));
    assert.deepEqual([by.r.action, by.s.action, by.empty.action, by.c.action, by.p.action, by.h.action], ['read', 'search', 'search', 'create', 'update', 'history']);
    assert.equal(by.r.resources, 'Observation/obs-9');
    assert.equal(by.s.resources, 'Observation/obs-1 Observation/obs-2');
    assert.equal(by.empty.resources, 'Condition', 'a search without results names the type it was about');
    assert.equal(by.c.resources, 'Observation/new-1');
    assert.equal(JSON.stringify(lines).includes('HIV'), false, 'no query parameters');
    assert.equal(JSON.stringify(lines).includes('secret'), false);
  });
});

describe('audit: accounting of disclosures (summary and streaming)', () => {
  it('summarises per app: how many, first and last (as the store counts in the database)', () => {
    const lines = disclosureLines([
      access({ requestId: '1', recorded: '2025-06-02T08:00:00Z' }),
      access({ requestId: '2', recorded: '2025-06-04T09:30:00Z' }),
      access({ requestId: '3', recorded: '2025-06-03T10:00:00Z', client: 'other-app' }),
    ]);
    assert.deepEqual(summaryOf(lines), [
      { app: 'growth-app', count: 2, first: new Date('2025-06-02T08:00:00Z'), last: new Date('2025-06-04T09:30:00Z') },
      { app: 'other-app', count: 1, first: new Date('2025-06-03T10:00:00Z'), last: new Date('2025-06-03T10:00:00Z') },
    ]);
    assert.deepEqual(summaryOf([]), []);
  });

  it('makes the same lines from a stream of events as from the whole list', async () => {
    const alert = emergencyOverrideStarted({
      issuer: ISSUER, recorded: new Date('2025-06-02T13:00:00Z'), user: { sub: 'u-er', roles: [] }, clientId: 'er-app', purpose: 'BTG', reason: 'unconscious', patient: 'pat-1', jti: 'jti-btg',
    } as Parameters<typeof emergencyOverrideStarted>[0]);
    const events = [
      access({ requestId: 'a', resources: ['Observation/obs-1'] }),
      access({ requestId: 'a', resources: ['Observation/obs-2'] }),
      access({ requestId: 'b', jti: 'jti-btg' }),
      access({ requestId: 'c', recorded: '2025-06-03T10:00:00Z' }),
    ];
    async function* stream() { yield* events; }
    const streamed: DisclosureLine[] = [];
    for await (const line of streamLines(stream(), { breakGlassJtis: breakGlassJtisOf([alert]) })) streamed.push(line);
    assert.deepEqual(streamed, disclosureLines([alert, ...events]));
    assert.equal(streamed.find((l) => l.request_id === 'b')?.break_glass, true, 'the alerts come as an option');
  });
});

describe('audit: accounting of disclosures (renderings)', () => {
  const line = (over: Partial<DisclosureLine> = {}): DisclosureLine => ({
    date: '2025-06-02T14:03:11.482Z', recipient_role: 'Doctor', recipient_organization: 'Example Hospital', app: 'growth-app',
    purpose_of_use: 'TREAT', action: 'read', resources: 'Observation/obs-1', break_glass: false, request_id: 'req-1',
    network_address: '203.0.113.9', outcome: 'disclosed', deidentified: false, ...over,
  });

  it('writes CSV with DESIGN\'s columns in order, then where, the outcome and de-identification, RFC 4180 quoting and CRLF', () => {
    const csv = toCsv([line(), line({ recipient_organization: 'Smith, Jones & "Partners"', app: 'two\nlines', break_glass: true })]);
    const rows = csv.split('\r\n');
    assert.equal(rows[0], 'date,recipient_role,recipient_organization,app,purpose_of_use,action,resources,break_glass,request_id,network_address,outcome,deidentified');
    assert.equal(rows[1], '2025-06-02T14:03:11.482Z,Doctor,Example Hospital,growth-app,TREAT,read,Observation/obs-1,false,req-1,203.0.113.9,disclosed,false');
    assert.equal(rows[2], '2025-06-02T14:03:11.482Z,Doctor,"Smith, Jones & ""Partners""","two\nlines",TREAT,read,Observation/obs-1,true,req-1,203.0.113.9,disclosed,false');
    assert.equal(rows[3], '', 'ends with a line break');
    assert.equal(toCsv([]), `${DISCLOSURE_COLUMNS.join(',')}\r\n`);
  });

  it('neutralises cells a spreadsheet would run as formulas', () => {
    const csv = toCsv([line({ recipient_organization: '=HYPERLINK("http://evil.example")', app: '+cmd', purpose_of_use: '-2+3', request_id: '@SUM(A1)', recipient_role: '\tx' })]);
    const row = csv.split('\r\n')[1];
    assert.equal(row, `2025-06-02T14:03:11.482Z,"'\tx","'=HYPERLINK(""http://evil.example"")",'+cmd,'-2+3,read,Observation/obs-1,false,'@SUM(A1),203.0.113.9,disclosed,false`);
  });

  it('quotes cells with a semicolon or tab, which spreadsheets in other locales split on (a formula after it would run)', () => {
    const row = toCsv([line({ app: 'Growth;=HYPERLINK("http://evil.example") (growth-app)', recipient_organization: 'A\t@SUM(A1)' })]).split('\r\n')[1];
    assert.equal(row, `2025-06-02T14:03:11.482Z,Doctor,"A\t@SUM(A1)","Growth;=HYPERLINK(""http://evil.example"") (growth-app)",TREAT,read,Observation/obs-1,false,req-1,203.0.113.9,disclosed,false`);
  });

  it('writes JSON report lines keyed by the CSV columns', () => {
    const parsed = JSON.parse(toJson([line({ network_address: '203.0.113.1', recipient_name: 'Jane' })])) as Record<string, unknown>[];
    assert.equal(parsed.length, 1);
    assert.deepEqual(Object.keys(parsed[0]), [...DISCLOSURE_COLUMNS]);
    assert.equal(parsed[0].break_glass, false);
    assert.equal(parsed[0].network_address, '203.0.113.1', 'where, in JSON too');
    assert.deepEqual(Object.keys(reportObjects([line({ recipient_name: 'Jane' })], { extras: true })[0]), [...DISCLOSURE_COLUMNS, 'recipient_name']);
    assert.deepEqual(JSON.parse(toJson([])), []);
  });

  it('wraps AuditEvents in a FHIR Bundle of type collection', () => {
    const events = [access(), { ...access(), id: '0b8e5c55-6a3e-4a8e-9a67-3c2f1f3b2a10' }];
    const bundle = toFhirBundle(events, new Date('2025-07-01T00:00:00Z'));
    assert.equal(bundle.resourceType, 'Bundle');
    assert.equal(bundle.type, 'collection');
    assert.equal(bundle.timestamp, '2025-07-01T00:00:00.000Z');
    assert.equal('total' in bundle, false, 'total is for searchset and history only (bdl-1)');
    assert.deepEqual(bundle.entry.map((e) => e.resource), events);
    assert.equal(bundle.entry[0].fullUrl, undefined);
    assert.equal(bundle.entry[1].fullUrl, 'urn:uuid:0b8e5c55-6a3e-4a8e-9a67-3c2f1f3b2a10');
  });

  it('makes text the standard PDF fonts can show', () => {
    assert.equal(pdfText('Zoë Müller – “ok”'), 'Zoë Müller – “ok”');
    assert.equal(pdfText('Łő李\u0007x'), '?o? x', 'accents stripped when the letter has no WinAnsi form; control characters become spaces');
  });

  it('renders a PDF: title, patient, summary, every line, break-the-glass flagged, several pages', async function () {
    const events = Array.from({ length: 60 }, (_, i) => access({
      requestId: `req-${i}`, recorded: new Date(Date.UTC(2025, 5, 1 + (i % 5), 8, i)).toISOString(), resources: [`Observation/obs-${i}`],
      purposes: i === 7 ? ['BTG'] : ['TREAT'],
    }));
    const lines = disclosureLines(events);
    const pdf = await toPdf(lines, summaryOf(lines), { patientName: 'Amy Shaw', patientId: 'pat-1', generated: new Date('2025-07-01T12:00:00Z') });
    assert.ok(Buffer.isBuffer(pdf));
    assert.equal(pdf.subarray(0, 5).toString('latin1'), '%PDF-');
    assert.match(pdf.subarray(-8).toString('latin1'), /%%EOF/);
    const pages = (pdf.toString('latin1').match(/\/Type \/Page\b/g) ?? []).length;
    assert.ok(pages >= 3, `60 accesses take several pages (got ${pages})`);

    const text = pdfShownText(pdf);
    for (const expected of ['Accounting of disclosures', 'Amy Shaw (pat-1)', 'Period: 2025-06-01', 'Summary', 'Every access', 'BREAK THE GLASS', 'Observation/obs-59', `page ${pages}`]) {
      assert.ok(text.includes(expected), `the PDF shows "${expected}"`);
    }
    assert.equal(text.includes('Jane Smith'), false, 'no staff names');

    const empty = await toPdf([], [], { patientId: 'pat-3', generated: new Date() });
    assert.match(pdfShownText(empty), /No accesses to your records were recorded/);

    const tool = hasTool('pdftotext') ? 'pdftotext' : hasTool('pdftoppm') ? 'pdftoppm' : undefined;
    if (!tool) {
      console.log('      (pdftotext and pdftoppm are not installed: the PDF was checked in-process only, not rendered)');
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'disclosures-pdf-'));
    try {
      writeFileSync(join(dir, 'r.pdf'), pdf);
      if (tool === 'pdftotext') {
        const rendered = execFileSync('pdftotext', ['-layout', join(dir, 'r.pdf'), '-'], { encoding: 'utf8' });
        assert.match(rendered, /Amy Shaw/);
        assert.match(rendered, /BREAK THE GLASS/);
      } else {
        execFileSync('pdftoppm', ['-png', '-r', '30', '-f', '1', '-l', '1', join(dir, 'r.pdf'), join(dir, 'page')]);
        console.log('      (pdftoppm rendered the first page; pdftotext is missing, so the name was checked in-process)');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
