// The audit of a de-identified access, in the guard module: the app gets pseudonyms, the audit record
// names what is stored (the real patient, whose accounting of disclosures must show the access) and
// says the data went out pseudonymized, also for ids too long for a pseudonym that reads back.
import assert from 'node:assert/strict';
import { createGuard, type AccessRecord } from '../../server/resource-server/guard.ts';
import { tokenContext } from '../../server/resource-server/verify-token.ts';
import { createPrivacyPolicy } from '../../server/privacy/pipeline.ts';
import { PSEUDED } from '../../server/privacy/deidentify.ts';
import type { FhirResource } from '../../server/resource-server/types.ts';
import type { UpstreamRequest } from '../../server/resource-server/upstream.ts';

const BASE = 'https://fhir.example.org/r4';
const LONG = `patient-${'x'.repeat(40)}`; // over 36 characters: a one-way pseudonym
const PATIENTS: FhirResource[] = [
  { resourceType: 'Patient', id: 'pat-1', birthDate: '1987-02-20' },
  { resourceType: 'Patient', id: LONG, birthDate: '1954-11-03' },
];

const upstream = {
  async send(request: UpstreamRequest) {
    const [path] = request.path.split('?');
    const found = path === 'Patient' ? PATIENTS : PATIENTS.filter((p) => path === `Patient/${p.id}`);
    if (path !== 'Patient' && !found.length) return { status: 404, headers: new Headers(), body: undefined };
    const body = path === 'Patient' ? { resourceType: 'Bundle', type: 'searchset', entry: found.map((resource) => ({ fullUrl: `http://upstream/fhir/Patient/${resource.id}`, resource })) } : found[0];
    return { status: 200, headers: new Headers(), body };
  },
};

const privacy = () => createPrivacyPolicy({
  defaultConfidentiality: 'N', deidentifyPurposes: ['HRESCH'], deidentification: { key: 'a'.repeat(32), dates: 'truncate-year' }, breakGlassHint: false, withoutConsent: 'permit',
});

function guardFor(purpose: string, records: AccessRecord[], resourcePolicy = privacy()) {
  return createGuard({
    base: BASE, upstreamBase: 'http://upstream/fhir', upstream,
    verify: async () => tokenContext({
      iss: 'https://auth.example.org', client_id: 'study-app', jti: 'j', exp: Date.now() / 1000 + 60, scope: 'system/*.rs',
      extensions: { ihe_iua: { purpose_of_use: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: purpose }] } },
    }, BASE),
    resourcePolicy,
    audit: async (record) => { records.push(record); },
  });
}
const get = (guard: ReturnType<typeof createGuard>, path: string) => guard.handle({ method: 'GET', path, headers: { authorization: 'Bearer t' } });

describe('guard: the audit of a de-identified access', () => {
  it('names the real patients and resources, labelled PSEUDED, while the answer carries pseudonyms only', async () => {
    const records: AccessRecord[] = [];
    const guard = guardFor('HRESCH', records);
    const search = await get(guard, 'Patient');
    const shown = ((search.body as { entry: { resource: FhirResource }[] }).entry).map((e) => e.resource.id!);
    assert.equal(shown.length, 2);
    assert.ok(!JSON.stringify(search.body).includes('pat-1') && !JSON.stringify(search.body).includes(LONG), 'the app sees pseudonyms');
    assert.deepEqual(records[0]!.patients.sort(), ['pat-1', LONG].sort(), 'the audit names the real patients, a long id too');
    assert.deepEqual(records[0]!.resources.sort(), [`Patient/${LONG}`, 'Patient/pat-1'].sort());
    assert.deepEqual(records[0]!.securityLabels, [PSEUDED]);

    const reads = await Promise.all(shown.map((id) => get(guard, `Patient/${id}`)));
    assert.deepEqual(reads.map((r) => r.status).sort(), [200, 404], 'the long id\'s pseudonym does not read back');
    const read = records.find((r) => r.status === 200 && r.interaction?.kind === 'read')!;
    assert.deepEqual(read.patients, ['pat-1'], 'a read by pseudonym');
    assert.deepEqual(read.resources, ['Patient/pat-1']);
    assert.deepEqual(read.securityLabels, [PSEUDED]);
  });

  it('leaves the audit of other purposes as it was: no label', async () => {
    const records: AccessRecord[] = [];
    await get(guardFor('TREAT', records), 'Patient');
    assert.deepEqual(records[0]!.patients.sort(), ['pat-1', LONG].sort());
    assert.equal(records[0]!.securityLabels, undefined);
  });

  it('records the real patient of a refused de-identified request that named a pseudonym', async () => {
    const records: AccessRecord[] = [];
    const guard = guardFor('HRESCH', records);
    const shown = ((await get(guard, 'Patient')).body as { entry: { resource: FhirResource }[] }).entry.map((e) => e.resource.id!);
    for (const id of shown) await get(guard, `Patient/${id}`);
    const pat1 = shown.find((_, i) => records[i + 1]!.status === 200)!;
    const refused = await get(guard, `Observation?patient=Patient/${pat1}&date=2025-09-15`);
    assert.equal(refused.status, 403);
    assert.deepEqual(records.at(-1)!.patients, ['pat-1']);
    assert.deepEqual(records.at(-1)!.securityLabels, [PSEUDED]);
  });

  it('refuses with 503, recording nothing, when a de-identified resource cannot be traced to its stored version', async () => {
    // A policy step that copies what admit returned loses the link to the stored resource: the audit
    // would name a pseudonym instead of the patient, so the guard must not answer.
    const policy = privacy();
    const copying = { ...policy, admit: async (...args: Parameters<typeof policy.admit>) => { const shown = await policy.admit(...args); return shown && { ...shown }; } };
    const search = await get(guardFor('HRESCH', []), 'Patient');
    const shown = (search.body as { entry: { resource: FhirResource }[] }).entry.map((e) => e.resource.id!);
    const records: AccessRecord[] = [];
    const reads = await Promise.all(shown.map((id) => get(guardFor('HRESCH', records, copying), `Patient/${id}`)));
    const res = reads.find((r) => r.status !== 404)!;
    assert.equal(res.status, 503);
    assert.equal((res.body as { resourceType: string }).resourceType, 'OperationOutcome');
    assert.ok(!JSON.stringify(res.body).includes('birthDate'), 'no data in the refusal');
    assert.deepEqual(records.map((r) => r.status), [404], 'only the read of the one-way pseudonym, which found nothing');
    assert.equal((await get(guardFor('TREAT', records, copying), 'Patient/pat-1')).status, 200, 'answers that are not de-identified are recorded as they are');
  });
});
