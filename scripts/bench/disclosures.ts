// How long a patient waits for /account/disclosures when their trail is long: 20,000 disclosures of
// pat-1 on a real server (SQLite file), amy signed in; the first page, a page further back, and the
// whole report as a CSV download. Baseline in the same run: a discovery GET (the HTTP floor).
//   node --import tsx scripts/bench/disclosures.ts [records=20000] [requests=50]
import { performance } from 'node:perf_hooks';
import { startTestServer } from '../../test/support/server.ts';
import { Browser, form, hiddenValue } from '../../test/support/oauth.ts';
import type { AuditEvent } from '../../server/audit/types.ts';

const records = Number(process.argv[2] ?? 20_000);
const requests = Number(process.argv[3] ?? 50);
const DCM = 'http://dicom.nema.org/resources/ontology/DCM';

const access = (i: number): AuditEvent => ({
  resourceType: 'AuditEvent',
  id: `bench-${i}`,
  type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
  subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: 'read' }],
  action: 'R',
  recorded: new Date(Date.UTC(2025, 0, 1) + i * 600_000).toISOString(),
  outcome: '0',
  agent: [
    { type: { coding: [{ system: DCM, code: '110152' }] }, requestor: false, who: { identifier: { value: i % 2 ? 'growth-app' : 'er-app' } }, network: { address: '203.0.113.9', type: '2' } },
    { type: { coding: [{ system: DCM, code: '110150' }] }, requestor: false, who: { identifier: { value: i % 2 ? 'growth-app' : 'er-app' } } },
    { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, requestor: true, who: { identifier: { value: 'u-doc' } },
      purposeOfUse: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }] }] },
  ],
  entity: [
    { what: { reference: 'Patient/pat-1' }, role: { code: '1' } },
    { what: { reference: `Observation/obs-${i}` }, role: { code: '4' } },
    { what: { identifier: { value: `bench-request-${i}` } }, type: { code: 'XrequestId' } },
  ],
});

function summary(name: string, samples: number[]) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(1);
  const mean = (samples.reduce((a, b) => a + b, 0) / samples.length).toFixed(1);
  console.log(`${name.padEnd(40)} n=${String(samples.length).padEnd(4)} mean ${mean.padStart(7)} ms  p50 ${at(0.5).padStart(7)} ms  p95 ${at(0.95).padStart(7)} ms`);
}

async function times(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    await fn();
    samples.push(performance.now() - start);
  }
  return samples;
}

const server = await startTestServer();
try {
  for (let i = 0; i < records; i += 1000) await server.audit.append(Array.from({ length: Math.min(1000, records - i) }, (_, j) => access(i + j)));
  const browser = new Browser();
  const login = await (await browser.fetch(`${server.issuer}/account/login?return_to=%2Faccount%2Fdisclosures`)).text();
  await browser.fetch(`${server.issuer}/account/login`, {
    method: 'POST', body: form({ csrf: hiddenValue(login, 'csrf'), username: 'amy', password: 'demo-password-3', return_to: '/account/disclosures' }),
  });
  const page = async (path: string) => {
    const res = await browser.fetch(`${server.issuer}${path}`);
    const text = await res.text();
    if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
    return text;
  };
  const first = await page('/account/disclosures'); // warm-up
  const older = /rel="next" href="([^"]+)"/.exec(first)?.[1]?.replace(/&amp;/g, '&');
  if (!older) throw new Error('no second page');
  await times(10, () => page('/account/disclosures'));

  console.log(`smart-auth accounting of disclosures, Node ${process.version}, SQLite file, ${records} disclosures of one patient`);
  summary('baseline: GET smart-configuration', await times(requests, () => fetch(`${server.issuer}/.well-known/smart-configuration`).then((r) => r.json())));
  summary('first page (100 lines, summary)', await times(requests, () => page('/account/disclosures')));
  summary('a page further back', await times(requests, () => page(older)));
  summary(`the whole CSV (${records} lines)`, await times(Math.max(1, Math.floor(requests / 10)), () => page('/account/disclosures.csv')));
  console.log(`first page: ${Math.round(first.length / 1024)} KiB of HTML`);
} finally {
  await server.stop();
}
