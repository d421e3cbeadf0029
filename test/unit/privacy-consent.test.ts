import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ACT_CODE, ACT_REASON, CONFIDENTIALITY } from '../../server/hcs/codes.ts';
import type { FhirResource } from '../../server/resource-server/types.ts';
import {
  applicableConsents, consentDecision, createConsentCache, provisionMatches, type ConsentProvision, type ConsentRequest,
} from '../../server/privacy/consent.ts';

const IRCP = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] };
const purpose = (code: string) => ({ system: ACT_REASON, code });
const conf = (code: string) => ({ system: CONFIDENTIALITY, code });

/** An IHE PCF-style privacy consent: a root permit with nested deny and permit exceptions. */
function exampleConsent(overrides: Record<string, unknown> = {}): FhirResource {
  return {
    resourceType: 'Consent', id: 'privacy-123', status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0', display: 'Patient Consent' }] }],
    patient: { reference: 'Patient/123' }, dateTime: '2025-01-15T10:00:00Z', performer: [{ reference: 'Patient/123' }],
    organization: [{ reference: 'Organization/hosp' }], sourceReference: { reference: 'DocumentReference/consent-scan-123' },
    policy: [{ uri: 'https://example.org/policy/privacy-v3' }],
    provision: {
      type: 'permit', period: { start: '2025-01-15', end: '2030-01-14' },
      purpose: [purpose('TREAT'), purpose('HPAYMT'), purpose('HOPERAT')],
      securityLabel: [conf('N')],
      provision: [
        { type: 'deny', actor: [{ role: IRCP, reference: { reference: 'Organization/acme-payer' } }] },
        { type: 'deny', dataPeriod: { start: '2004-01-01', end: '2004-12-31' } },
        {
          type: 'permit', actor: [{ role: IRCP, reference: { reference: 'Group/ed-clinicians' } }],
          purpose: [purpose('BTG')], securityLabel: [conf('R')],
        },
      ],
    },
    ...overrides,
  };
}

const NOW = new Date('2025-06-01T12:00:00Z');

function observation(opts: { label?: string; date?: string; id?: string; extra?: Record<string, unknown> } = {}): FhirResource {
  return {
    resourceType: 'Observation', id: opts.id ?? 'obs-1', subject: { reference: 'Patient/123' },
    effectiveDateTime: opts.date ?? '2024-03-02',
    ...(opts.label && { meta: { security: [conf(opts.label)] } }),
    ...opts.extra,
  };
}

const req = (actors: string[], p: string | undefined, resource: FhirResource, now = NOW): ConsentRequest => ({ actors, purpose: p, resource, now });
const DR = ['Practitioner/dr-smith', 'Organization/example-hospital'];

describe('privacy consent (PCF)', () => {
  const example = [exampleConsent()];

  it('permits a TREAT clinician on N (and on unlabelled) data', () => {
    assert.deepEqual(consentDecision(example, req(DR, 'TREAT', observation({ label: 'N' }))), { decision: 'permit', consentId: 'privacy-123' });
    assert.equal(consentDecision(example, req(DR, 'TREAT', observation())).decision, 'permit');
    assert.equal(consentDecision(example, req(DR, 'TREAT', observation({ label: 'L' }))).decision, 'permit');
  });

  it('does not cover R data for a TREAT clinician (root ceiling N) ⇒ no-consent', () => {
    assert.equal(consentDecision(example, req(DR, 'TREAT', observation({ label: 'R' }))).decision, 'no-consent');
    assert.equal(consentDecision(example, req(DR, 'TREAT', observation({ label: 'V' }))).decision, 'no-consent');
    // unlabelled data counts as the default confidentiality
    assert.equal(consentDecision(example, req(DR, 'TREAT', observation()), { defaultConfidentiality: 'R' }).decision, 'no-consent');
  });

  it('does not cover another purpose, or no purpose ⇒ no-consent', () => {
    assert.equal(consentDecision(example, req(DR, 'HRESCH', observation({ label: 'N' }))).decision, 'no-consent');
    assert.equal(consentDecision(example, req(DR, undefined, observation({ label: 'N' }))).decision, 'no-consent');
  });

  it('denies the payer organization, whatever its purpose', () => {
    const payer = ['Organization/acme-payer'];
    assert.equal(consentDecision(example, req(payer, 'TREAT', observation({ label: 'N' }))).decision, 'deny');
    assert.equal(consentDecision(example, req(payer, 'HPAYMT', observation({ label: 'N' }))).decision, 'deny');
    assert.equal(consentDecision(example, req(['https://fhir.example.org/r4/Organization/acme-payer'], 'COVERAGE', observation())).decision, 'deny');
  });

  it('denies data from 2004, and data without a date is not caught by the dataPeriod', () => {
    assert.equal(consentDecision(example, req(DR, 'TREAT', observation({ date: '2004-07-01' }))).decision, 'deny');
    assert.equal(consentDecision(example, req(DR, 'TREAT', observation({ date: '2004-12-31T23:00:00Z' }))).decision, 'deny');
    assert.equal(consentDecision(example, req(DR, 'TREAT', observation({ date: '2005-01-01' }))).decision, 'permit');
    const condition: FhirResource = { resourceType: 'Condition', id: 'c', recordedDate: '2004-02-02' };
    assert.equal(consentDecision(example, req(DR, 'TREAT', condition)).decision, 'deny');
    const undated: FhirResource = { resourceType: 'Patient', id: '123' };
    assert.equal(consentDecision(example, req(DR, 'TREAT', undated)).decision, 'permit');
  });

  it('permits an ED-group member with BTG on R data, but not V and not without BTG', () => {
    const ed = ['Practitioner/dr-er', 'Group/ed-clinicians'];
    assert.equal(consentDecision(example, req(ed, 'BTG', observation({ label: 'R' }))).decision, 'permit');
    assert.equal(consentDecision(example, req(ed, 'BTG', observation({ label: 'V' }))).decision, 'no-consent');
    assert.equal(consentDecision(example, req(ed, 'ETREAT', observation({ label: 'R' }))).decision, 'no-consent');
    assert.equal(consentDecision(example, req(DR, 'BTG', observation({ label: 'R' }))).decision, 'no-consent');
    // BTG is-a TREAT: the root covers N data for it
    assert.equal(consentDecision(example, req(DR, 'BTG', observation({ label: 'N' }))).decision, 'permit');
  });

  it('lets a deny exception override a permit exception that matches too', () => {
    const ed = ['Group/ed-clinicians'];
    assert.equal(consentDecision(example, req(ed, 'BTG', observation({ label: 'R', date: '2004-05-05' }))).decision, 'deny');
  });

  it('ignores an expired, a future, an inactive, an other-scope consent', () => {
    const n = observation({ label: 'N' });
    assert.equal(consentDecision(example, req(['Organization/acme-payer'], 'TREAT', n, new Date('2031-01-01T00:00:00Z'))).decision, 'no-consent');
    assert.equal(consentDecision(example, req(DR, 'TREAT', n, new Date('2030-01-14T23:59:00Z'))).decision, 'permit');
    assert.equal(consentDecision(example, req(DR, 'TREAT', n, new Date('2024-01-01T00:00:00Z'))).decision, 'no-consent');
    for (const bad of [{ status: 'inactive' }, { status: 'draft' }, { scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'research' }] } }]) {
      assert.deepEqual(consentDecision([exampleConsent(bad)], req(['Organization/acme-payer'], 'TREAT', n)), { decision: 'no-consent' });
    }
  });

  it('denies everything under a deny-all consent; a root without type permits', () => {
    const denyAll = exampleConsent({ id: 'deny-all', provision: { type: 'deny' } });
    assert.deepEqual(consentDecision([denyAll], req(DR, 'TREAT', observation({ label: 'N' }))), { decision: 'deny', consentId: 'deny-all' });
    assert.equal(consentDecision([denyAll], req([], undefined, observation({ label: 'V' }))).decision, 'deny');
    const open = exampleConsent({ provision: { purpose: [purpose('TREAT')] } });
    assert.equal(consentDecision([open], req(DR, 'TREAT', observation({ label: 'V' }))).decision, 'permit');
  });

  it('lets the most recent consent win, even when it does not cover the request', () => {
    const older = exampleConsent({ id: 'old', dateTime: '2024-01-01T00:00:00Z', provision: { type: 'deny' } });
    const newer = exampleConsent({ id: 'new', dateTime: '2025-03-01T00:00:00Z' });
    assert.deepEqual(consentDecision([newer, older], req(DR, 'TREAT', observation({ label: 'N' }))), { decision: 'permit', consentId: 'new' });
    assert.deepEqual(consentDecision([older, newer], req(DR, 'TREAT', observation({ label: 'N' }))), { decision: 'permit', consentId: 'new' });
    assert.deepEqual(consentDecision([older, newer], req(DR, 'TREAT', observation({ label: 'R' }))), { decision: 'no-consent', consentId: 'new' });
    const newestDeny = exampleConsent({ id: 'newest', dateTime: '2025-05-01T00:00:00Z', provision: { type: 'deny' } });
    assert.equal(consentDecision([older, newer, newestDeny], req(DR, 'TREAT', observation({ label: 'N' }))).consentId, 'newest');
    // an inactive newer consent does not replace an active older one
    const inactive = exampleConsent({ id: 'inactive', status: 'inactive', dateTime: '2025-05-01T00:00:00Z' });
    assert.equal(consentDecision([older, inactive], req(DR, 'TREAT', observation())).consentId, 'old');
  });

  it('counts a consent as given no later than the FHIR server stored it: a writer who dates one in the future does not outrank those recorded after it', () => {
    const stored = (id: string, dateTime: string, lastUpdated: string, type: 'permit' | 'deny') =>
      exampleConsent({ id, dateTime, meta: { lastUpdated }, provision: { type } });
    const futureDated = stored('future-dated', '2099-01-01T00:00:00Z', '2025-03-01T00:00:00Z', 'permit');
    const recordedLater = stored('recorded-later', '2025-04-01T00:00:00Z', '2025-04-01T00:00:05Z', 'deny');
    assert.equal(consentDecision([futureDated, recordedLater], req(DR, 'TREAT', observation({ label: 'N' }))).consentId, 'recorded-later');
    assert.equal(consentDecision([recordedLater, futureDated], req(DR, 'TREAT', observation({ label: 'N' }))).consentId, 'recorded-later');
    // backdated (a paper consent entered later) keeps its own date
    const backdated = stored('backdated', '2025-02-01T00:00:00Z', '2025-05-01T00:00:00Z', 'permit');
    assert.equal(consentDecision([backdated, recordedLater], req(DR, 'TREAT', observation({ label: 'N' }))).consentId, 'recorded-later');
  });

  it('selects applicable consents of one patient, newest first', () => {
    const other = exampleConsent({ id: 'other', patient: { reference: 'Patient/999' } });
    const abs = exampleConsent({ id: 'abs', patient: { reference: 'https://fhir.example.org/r4/Patient/123' }, dateTime: '2025-02-01T00:00:00Z' });
    const expired = exampleConsent({ id: 'exp', provision: { period: { end: '2025-01-01' } } });
    const inactive = exampleConsent({ id: 'inactive', status: 'inactive' });
    const list = applicableConsents([other, exampleConsent(), abs, expired, inactive, { resourceType: 'Patient', id: '123' }], '123', NOW);
    assert.deepEqual(list.map((c) => c.id), ['abs', 'privacy-123']);
    assert.equal(consentDecision([other], req(DR, 'TREAT', observation()), { patientId: '123' }).decision, 'no-consent');
  });

  it('matches sensitivity labels by subsumption and data references', () => {
    const sud = exampleConsent({
      provision: {
        type: 'permit',
        provision: [
          { type: 'deny', securityLabel: [{ system: ACT_CODE, code: 'SUD' }] },
          { type: 'deny', data: [{ meaning: 'instance', reference: { reference: 'Observation/secret' } }] },
          { type: 'deny', data: [{ meaning: 'related', reference: { reference: 'Encounter/rehab' } }] },
        ],
      },
    });
    const labelled = (code: string) => observation({ extra: { meta: { security: [{ system: ACT_CODE, code }] } } });
    assert.equal(consentDecision([sud], req(DR, 'TREAT', labelled('OPIOIDUD'))).decision, 'deny');
    assert.equal(consentDecision([sud], req(DR, 'TREAT', labelled('ETH'))).decision, 'deny');
    assert.equal(consentDecision([sud], req(DR, 'TREAT', labelled('HIV'))).decision, 'permit');
    assert.equal(consentDecision([sud], req(DR, 'TREAT', observation({ id: 'secret' }))).decision, 'deny');
    assert.equal(consentDecision([sud], req(DR, 'TREAT', observation({ extra: { encounter: { reference: 'Encounter/rehab' } } }))).decision, 'deny');
    assert.equal(consentDecision([sud], req(DR, 'TREAT', observation({ extra: { encounter: { reference: 'Encounter/other' } } }))).decision, 'permit');
  });

  it('caches consent lookups per patient until invalidated or expired', async () => {
    let calls = 0;
    let time = 0;
    const cache = createConsentCache(async (id) => {
      calls++;
      return [exampleConsent({ patient: { reference: `Patient/${id}` } })];
    }, { ttlMs: 1000, clock: () => time });
    const [a, b] = await Promise.all([cache.forPatient('123'), cache.forPatient('123')]);
    await cache.forPatient('123');
    assert.equal(calls, 1);
    assert.equal(a, b);
    await cache.forPatient('456');
    assert.equal(calls, 2);
    cache.invalidate('123');
    await cache.forPatient('123');
    await cache.forPatient('456');
    assert.equal(calls, 3);
    cache.invalidate();
    await cache.forPatient('456');
    assert.equal(calls, 4);
    time = 1500;
    await cache.forPatient('456');
    assert.equal(calls, 5);
  });

  it('does not cache a failed load', async () => {
    let calls = 0;
    const cache = createConsentCache(async () => {
      if (calls++ === 0) throw new Error('down');
      return [];
    }, {});
    await assert.rejects(cache.forPatient('1'), /down/);
    assert.deepEqual(await cache.forPatient('1'), []);
    assert.equal(calls, 2);
  });

  it('property: adding a nested exception that does not match never changes the decision', () => {
    const purposes = ['TREAT', 'ETREAT', 'BTG', 'HPAYMT', 'HOPERAT', 'HRESCH', 'HTEST'];
    const confs = ['U', 'L', 'M', 'N', 'R', 'V'];
    const actorsPool = ['Practitioner/a', 'Organization/b', 'Group/c', 'Group/d'];
    const provisionArb: fc.Arbitrary<ConsentProvision> = fc.record(
      {
        type: fc.constantFrom('permit', 'deny'),
        actor: fc.array(fc.constantFrom(...actorsPool).map((r) => ({ role: IRCP, reference: { reference: r } })), { minLength: 1, maxLength: 2 }),
        purpose: fc.array(fc.constantFrom(...purposes).map(purpose), { minLength: 1, maxLength: 2 }),
        securityLabel: fc.array(fc.oneof(fc.constantFrom(...confs).map(conf), fc.constantFrom('SUD', 'HIV', 'ETHUD').map((code) => ({ system: ACT_CODE, code }))), { minLength: 1, maxLength: 2 }),
        dataPeriod: fc.constantFrom({ start: '2004-01-01', end: '2004-12-31' }, { start: '2020-01-01' }, { end: '2010-06-30' }),
      },
      { requiredKeys: ['type'] },
    );
    const requestArb = fc.record({
      actors: fc.subarray(actorsPool),
      purpose: fc.option(fc.constantFrom(...purposes), { nil: undefined }),
      label: fc.option(fc.constantFrom(...confs), { nil: undefined }),
      sensitivity: fc.option(fc.constantFrom('OPIOIDUD', 'HIV', 'PSY'), { nil: undefined }),
      date: fc.option(fc.constantFrom('2004-06-01', '2015-01-01', '2023-09-09T10:00:00Z'), { nil: undefined }),
    });
    fc.assert(
      fc.property(provisionArb, fc.array(provisionArb, { maxLength: 3 }), provisionArb, requestArb, fc.nat(), (root, nested, extra, r, at) => {
        const security = [...(r.label ? [conf(r.label)] : []), ...(r.sensitivity ? [{ system: ACT_CODE, code: r.sensitivity }] : [])];
        const resource: FhirResource = {
          resourceType: 'Observation', id: 'o',
          ...(security.length && { meta: { security } }),
          ...(r.date && { effectiveDateTime: r.date }),
        };
        const request = req(r.actors, r.purpose, resource);
        fc.pre(!provisionMatches(extra, request));
        const before = exampleConsent({ provision: { ...root, provision: nested } });
        const withExtra = [...nested];
        withExtra.splice(at % (nested.length + 1), 0, extra);
        const after = exampleConsent({ provision: { ...root, provision: withExtra } });
        assert.deepEqual(consentDecision([after], request), consentDecision([before], request));
      }),
      { numRuns: 300 },
    );
  });
});
