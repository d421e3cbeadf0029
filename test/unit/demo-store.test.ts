import assert from 'node:assert/strict';
import { statSync } from 'node:fs';

import { isInPatientCompartment, patientsOf } from '../../server/fhir/compartment.ts';
import {
  FhirStoreError,
  SearchParameterError,
  capabilityStatement,
  createDemoStore,
  loadDemoBundle,
  matchesSearch,
  operationOutcome,
  searchBundle,
  type DemoStore,
  type FhirResource,
} from '../../server/fhir/demo-store.ts';

const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const ACTCODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const ACTREASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const OBS_CAT = 'http://terminology.hl7.org/CodeSystem/observation-category';
const COND_CAT = 'http://terminology.hl7.org/CodeSystem/condition-category';
const LOINC = 'http://loinc.org';
const SCT = 'http://snomed.info/sct';
const RXNORM = 'http://www.nlm.nih.gov/research/umls/rxnorm';
const MRN = 'urn:oid:2.16.840.1.113883.19.5';

const ids = (rs: readonly FhirResource[]) => rs.map((r) => r.id).sort();
const codings = (cc: unknown) => ((cc as { coding?: { system?: string; code?: string }[] } | undefined)?.coding ?? []);
const labels = (r: FhirResource) => (r.meta?.security ?? []).map((c) => `${c.system}|${c.code}`).sort();

/** Every `{ reference }` string anywhere in a value. */
function referencesIn(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) for (const v of value) referencesIn(v, out);
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') out.push(v);
      else referencesIn(v, out);
    }
  }
  return out;
}

describe('fhir/demo-data.json', () => {
  const bundle = loadDemoBundle();
  const resources = (bundle.entry ?? []).map((e) => e.resource!);
  const ofType = (type: string) => resources.filter((r) => r.resourceType === type);
  const find = (type: string, id: string) => resources.find((r) => r.resourceType === type && r.id === id);

  it('is a small collection Bundle with unique, readable ids and fixed 2026 meta', () => {
    assert.equal(bundle.resourceType, 'Bundle');
    assert.equal(bundle.type, 'collection');
    assert.ok(statSync(new URL('../../server/fhir/demo-data.json', import.meta.url)).size < 60_000);
    const keys = resources.map((r) => `${r.resourceType}/${r.id}`);
    assert.equal(new Set(keys).size, keys.length);
    for (const r of resources) {
      assert.match(r.id!, /^[a-z0-9-]{3,32}$/, `${r.resourceType}/${r.id}`);
      assert.equal(r.meta?.versionId, '1', `${r.resourceType}/${r.id}`);
      assert.match(r.meta?.lastUpdated ?? '', /^2026-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/, `${r.resourceType}/${r.id}`);
    }
    for (const e of bundle.entry ?? []) {
      assert.equal(e.fullUrl, `https://example.org/fhir/${e.resource!.resourceType}/${e.resource!.id}`);
    }
  });

  it('has exactly the two practitioners and the hospital', () => {
    assert.deepEqual(ids(ofType('Practitioner')), ['dr-jones', 'dr-smith']);
    const smith = find('Practitioner', 'dr-smith')!;
    assert.deepEqual((smith.name as { family: string; given: string[] }[])[0].given, ['Jane']);
    assert.equal((smith.name as { family: string }[])[0].family, 'Smith');
    assert.equal((find('Practitioner', 'dr-jones')!.name as { family: string }[])[0].family, 'Jones');
    assert.deepEqual(ids(ofType('Organization')), ['example-hospital']);
    assert.equal(find('Organization', 'example-hospital')!.name, 'Example Hospital');
  });

  it('has the four demo patients with identifiers, demographics and links', () => {
    const expected: [string, string, string, string, string][] = [
      ['pat-1', 'Amy', 'Shaw', 'female', '1987-02-20'],
      ['pat-2', 'Daniel', 'Garcia', 'male', '1954-11-03'],
      ['pat-3', 'Maria', 'Chen', 'female', '2012-06-14'],
      ['pat-4', 'Test', 'Patient', 'unknown', '1990-01-01'],
    ];
    assert.deepEqual(ids(ofType('Patient')), expected.map((e) => e[0]));
    for (const [id, given, family, gender, birthDate] of expected) {
      const p = find('Patient', id)!;
      const name = (p.name as { given: string[]; family: string }[])[0];
      assert.equal(name.given[0], given);
      assert.equal(name.family, family);
      assert.equal(p.gender, gender);
      assert.equal(p.birthDate, birthDate);
      const identifier = (p.identifier as { system: string; value: string }[])[0];
      assert.equal(identifier.system, MRN);
      assert.match(identifier.value, /^MRN-\d+$/);
      assert.ok((p.address as unknown[]).length > 0);
      assert.ok((p.telecom as unknown[]).length > 0);
      assert.deepEqual(referencesIn(p.generalPractitioner), ['Practitioner/dr-smith']);
      assert.deepEqual(referencesIn(p.managingOrganization), ['Organization/example-hospital']);
    }
    const contact = (find('Patient', 'pat-3')!.contact as { relationship: unknown[] }[])[0];
    assert.ok(contact.relationship.flatMap(codings).some((c) => c.code === 'MTH'), 'pat-3 has a parent contact');
    assert.deepEqual(labels(find('Patient', 'pat-4')!), [`${ACTREASON}|HTEST`]);
  });

  it('gives each non-test patient an encounter, observations of ≥2 categories, a condition and a medication request', () => {
    const store = createDemoStore();
    const real = resources.filter((r) => r.resourceType === 'Patient' && !labels(r).includes(`${ACTREASON}|HTEST`));
    assert.ok(real.length >= 3);
    for (const p of real) {
      const q = `patient=${p.id}`;
      assert.ok(store.search('Encounter', q).length >= 1, `${p.id} encounters`);
      const categories = new Set(store.search('Observation', q).flatMap((o) => (o.category as unknown[]).flatMap(codings)).map((c) => c.code));
      assert.ok(categories.size >= 2, `${p.id} observation categories ${[...categories]}`);
      assert.ok(store.search('Condition', q).length >= 1, `${p.id} conditions`);
      assert.ok(store.search('MedicationRequest', q).length >= 1, `${p.id} medication requests`);
    }
    assert.deepEqual(ids(store.search('Encounter', 'patient=pat-1')), ['enc-1a', 'enc-1b']);
    assert.deepEqual(ids(store.search('Encounter', 'patient=pat-2')), ['enc-2a', 'enc-2b']);
    assert.deepEqual(ids(store.search('Encounter', 'patient=pat-3')), ['enc-3a']);
    assert.deepEqual(store.search('Encounter', 'patient=pat-4'), []);
  });

  it('uses the expected code systems and observation codes', () => {
    const obsCodes = new Set(ofType('Observation').flatMap((o) => codings(o.code)).filter((c) => c.system === LOINC).map((c) => c.code));
    for (const code of ['4548-4', '2345-7', '8867-4', '85354-9', '29463-7', '72166-2', '20447-9']) assert.ok(obsCodes.has(code), code);
    const obsCategories = new Set(ofType('Observation').flatMap((o) => (o.category as unknown[]).flatMap(codings))
      .map((c) => { assert.equal(c.system, OBS_CAT); return c.code; }));
    assert.deepEqual([...obsCategories].sort(), ['laboratory', 'social-history', 'survey', 'vital-signs']);
    for (const bp of ofType('Observation').filter((o) => codings(o.code).some((c) => c.code === '85354-9'))) {
      const parts = (bp.component as { code: unknown }[]).flatMap((c) => codings(c.code)).map((c) => c.code);
      assert.deepEqual(parts, ['8480-6', '8462-4']);
    }
    const condCategories = new Set(ofType('Condition').flatMap((c) => (c.category as unknown[]).flatMap(codings))
      .map((c) => { assert.equal(c.system, COND_CAT); return c.code; }));
    assert.deepEqual([...condCategories].sort(), ['encounter-diagnosis', 'problem-list-item']);
    for (const c of ofType('Condition')) assert.ok(codings(c.code).every((x) => x.system === SCT), c.id);
    for (const m of ofType('MedicationRequest')) assert.ok(codings(m.medicationCodeableConcept).every((x) => x.system === RXNORM), m.id);
    assert.ok(ofType('AllergyIntolerance').length >= 1);
    assert.ok(ofType('Immunization').length >= 1);
  });

  it('dates observations and encounters in 2025–2026', () => {
    for (const o of ofType('Observation')) assert.match(String(o.effectiveDateTime), /^202[56]-/, o.id);
    for (const e of ofType('Encounter')) assert.match(String((e.period as { start: string }).start), /^202[56]-/, e.id);
  });

  it('labels exactly the sensitive resources', () => {
    const labelled = Object.fromEntries(resources.filter((r) => labels(r).length > 0).map((r) => [`${r.resourceType}/${r.id}`, labels(r)]));
    assert.deepEqual(labelled, {
      'Patient/pat-4': [`${ACTREASON}|HTEST`],
      'Condition/cond-1-depression': [`${ACTCODE}|PSY`, `${CONF}|R`],
      'Observation/obs-2a-hiv-vl': [`${ACTCODE}|HIV`, `${CONF}|R`],
      'Condition/cond-2-oud': [`${ACTCODE}|SUD`],
      'Observation/obs-1-brca': [`${CONF}|V`],
    });
    assert.ok(codings(find('Observation', 'obs-2a-hiv-vl')!.code).some((c) => c.code === '20447-9'));
    assert.deepEqual(patientsOf(find('Condition', 'cond-1-depression')!), ['pat-1']);
    assert.deepEqual(patientsOf(find('Observation', 'obs-1-brca')!), ['pat-1']);
    assert.deepEqual(patientsOf(find('Observation', 'obs-2a-hiv-vl')!), ['pat-2']);
    assert.deepEqual(patientsOf(find('Condition', 'cond-2-oud')!), ['pat-2']);
  });

  it('resolves every reference inside the bundle, all of them relative', () => {
    const keys = new Set(resources.map((r) => `${r.resourceType}/${r.id}`));
    const refs = resources.flatMap((r) => referencesIn(r));
    assert.ok(refs.length > 100);
    for (const reference of refs) {
      assert.match(reference, /^[A-Z][A-Za-z]+\/[a-z0-9-]+$/);
      assert.ok(keys.has(reference), `unresolved ${reference}`);
    }
  });

  it('has every encounter-linked resource point at an encounter of the same patient', () => {
    for (const r of resources) {
      const enc = (r.encounter as { reference?: string } | undefined)?.reference;
      if (!enc) continue;
      const encounter = find('Encounter', enc.split('/')[1])!;
      assert.deepEqual(patientsOf(r), patientsOf(encounter), `${r.resourceType}/${r.id}`);
    }
  });
});

describe('fhir/demo-store', () => {
  let store: DemoStore;
  beforeEach(() => { store = createDemoStore(); });

  describe('read / types', () => {
    it('reads by type and id', () => {
      const p = store.read('Patient', 'pat-1')!;
      assert.equal(p.resourceType, 'Patient');
      assert.equal(p.id, 'pat-1');
      assert.equal(store.read('Patient', 'nope'), undefined);
      assert.equal(store.read('Observation', 'pat-1'), undefined);
      assert.equal(store.read('constructor', 'x'), undefined);
    });

    it('returns copies', () => {
      const p = store.read('Patient', 'pat-1')!;
      p.gender = 'other';
      store.search('Patient', '_id=pat-1')[0].gender = 'other';
      assert.equal(store.read('Patient', 'pat-1')!.gender, 'female');
    });

    it('lists the types present', () => {
      assert.deepEqual(store.types(), [
        'AllergyIntolerance', 'Condition', 'Encounter', 'Immunization', 'MedicationRequest', 'Observation',
        'Organization', 'Patient', 'Practitioner', 'RelatedPerson',
      ]);
    });
  });

  describe('search', () => {
    it('with no parameters returns the whole type in load order', () => {
      assert.deepEqual(store.search('Patient').map((p) => p.id), ['pat-1', 'pat-2', 'pat-3', 'pat-4']);
      assert.deepEqual(store.search('Patient', new URLSearchParams()).map((p) => p.id), ['pat-1', 'pat-2', 'pat-3', 'pat-4']);
      assert.deepEqual(store.search('Basic'), []);
    });

    it('_id, with OR values', () => {
      assert.deepEqual(ids(store.search('Patient', '_id=pat-2')), ['pat-2']);
      assert.deepEqual(ids(store.search('Patient', '_id=pat-2,pat-3,nope')), ['pat-2', 'pat-3']);
      assert.deepEqual(store.search('Observation', '_id=pat-2'), []);
    });

    it('patient=Patient/pat-1 returns only pat-1 data', () => {
      for (const type of ['Observation', 'Condition', 'Encounter', 'MedicationRequest', 'AllergyIntolerance', 'Immunization']) {
        const all = store.search(type);
        const viaRef = store.search(type, new URLSearchParams({ patient: 'Patient/pat-1' }));
        const viaId = store.search(type, 'patient=pat-1');
        assert.deepEqual(ids(viaRef), ids(viaId), type);
        assert.deepEqual(ids(viaRef), ids(all.filter((r) => isInPatientCompartment(r, 'pat-1'))), type);
        for (const r of viaRef) assert.deepEqual(patientsOf(r), ['pat-1'], `${type}/${r.id}`);
      }
      assert.deepEqual(ids(store.search('Observation', 'patient=Patient/pat-1')), [
        'obs-1-brca', 'obs-1a-bp', 'obs-1a-glucose', 'obs-1a-hba1c', 'obs-1a-smoking', 'obs-1a-weight', 'obs-1b-glucose', 'obs-1b-hr',
      ]);
      assert.deepEqual(ids(store.search('AllergyIntolerance', 'patient=pat-1')), ['allergy-1-penicillin']);
      assert.deepEqual(ids(store.search('Immunization', 'patient=pat-2')), ['imm-2-flu']);
      assert.deepEqual(ids(store.search('Patient', 'patient=pat-3')), ['pat-3']);
      assert.deepEqual(ids(store.search('RelatedPerson', 'patient=pat-3')), ['rp-3-mother']);
    });

    it('patient accepts OR values, absolute references, and nothing but Patient', () => {
      assert.equal(store.search('Condition', 'patient=pat-1,pat-2').length,
        store.search('Condition', 'patient=pat-1').length + store.search('Condition', 'patient=pat-2').length);
      assert.deepEqual(ids(store.search('Encounter', 'patient=https://ehr.example/fhir/Patient/pat-3')), ['enc-3a']);
      assert.deepEqual(store.search('Observation', 'patient=Practitioner/dr-smith'), []);
      assert.deepEqual(store.search('Observation', 'patient=Group/pat-1'), []);
      assert.deepEqual(store.search('Observation', 'patient=not a reference/x/'), []);
      // Types with no patient element never match a patient restriction.
      assert.deepEqual(store.search('Practitioner', 'patient=pat-1'), []);
    });

    it('subject reads the subject element', () => {
      assert.deepEqual(ids(store.search('Encounter', 'subject=Patient/pat-1')), ['enc-1a', 'enc-1b']);
      assert.deepEqual(ids(store.search('MedicationRequest', 'subject=pat-3')), ['medreq-3-albuterol', 'medreq-3a-amoxicillin']);
      assert.deepEqual(store.search('Observation', 'subject=Group/pat-1'), []);
      // Observation.performer is a compartment path but not the subject.
      assert.deepEqual(store.search('Observation', 'subject=Practitioner/dr-smith'), []);
    });

    it('category: system|code, code, system|, |code, OR', () => {
      const labs = ids(store.search('Observation', `category=${OBS_CAT}|laboratory`));
      assert.deepEqual(labs, ['obs-1-brca', 'obs-1a-glucose', 'obs-1a-hba1c', 'obs-1b-glucose', 'obs-2a-glucose', 'obs-2a-hiv-vl', 'obs-3a-hgb']);
      assert.deepEqual(ids(store.search('Observation', 'category=laboratory')), labs);
      assert.deepEqual(store.search('Observation', 'category=http://other.example|laboratory'), []);
      assert.deepEqual(store.search('Observation', 'category=|laboratory'), [], 'the codings have a system');
      assert.equal(store.search('Observation', `category=${OBS_CAT}|`).length, store.search('Observation').length);
      const vitals = store.search('Observation', 'category=vital-signs');
      const both = store.search('Observation', new URLSearchParams({ category: `laboratory,${OBS_CAT}|vital-signs` }));
      assert.equal(both.length, labs.length + vitals.length);
      assert.deepEqual(ids(store.search('Observation', 'category=survey')), ['obs-2b-pain']);
      assert.deepEqual(ids(store.search('Observation', 'category=social-history')), ['obs-1a-smoking', 'obs-2a-smoking']);
      assert.deepEqual(ids(store.search('Condition', `category=${COND_CAT}|encounter-diagnosis`)), ['cond-1b-bronchitis', 'cond-2b-chest-pain', 'cond-3a-strep']);
      assert.deepEqual(ids(store.search('AllergyIntolerance', 'category=medication')), ['allergy-1-penicillin'], 'primitive code');
      assert.deepEqual(store.search('AllergyIntolerance', 'category=http://hl7.org/fhir/allergy-intolerance-category|medication'), []);
    });

    it('code over code and medicationCodeableConcept, vaccine-code', () => {
      assert.deepEqual(ids(store.search('Observation', `code=${LOINC}|4548-4`)), ['obs-1a-hba1c']);
      assert.deepEqual(ids(store.search('Observation', 'code=2345-7')), ['obs-1a-glucose', 'obs-1b-glucose', 'obs-2a-glucose']);
      assert.deepEqual(ids(store.search('Observation', 'code=8867-4,29463-7&patient=pat-3')), ['obs-3a-hr', 'obs-3a-weight']);
      assert.deepEqual(ids(store.search('Condition', `code=${SCT}|44054006`)), ['cond-1-diabetes']);
      assert.deepEqual(ids(store.search('MedicationRequest', `code=${RXNORM}|314076`)), ['medreq-2-lisinopril']);
      assert.deepEqual(ids(store.search('Immunization', 'vaccine-code=http://hl7.org/fhir/sid/cvx|150')), ['imm-2-flu']);
      assert.deepEqual(store.search('Observation', 'code=8480-6'), [], 'component codes are not the code');
    });

    it('status and clinical-status', () => {
      assert.equal(store.search('Observation', 'status=final').length, store.search('Observation').length);
      assert.deepEqual(store.search('Observation', 'status=preliminary'), []);
      assert.deepEqual(ids(store.search('MedicationRequest', 'status=completed')), ['medreq-3a-amoxicillin']);
      assert.equal(store.search('MedicationRequest', 'status=active,completed').length, store.search('MedicationRequest').length);
      assert.deepEqual(ids(store.search('Condition', 'clinical-status=resolved')), ['cond-1b-bronchitis', 'cond-2b-chest-pain', 'cond-3a-strep']);
      assert.deepEqual(store.search('Condition', 'status=active'), [], 'Condition has no status element');
    });

    it('encounter', () => {
      assert.deepEqual(ids(store.search('Observation', 'encounter=enc-2b')), ['obs-2b-bp', 'obs-2b-hr', 'obs-2b-pain']);
      assert.deepEqual(ids(store.search('Condition', 'encounter=Encounter/enc-2b')), ['cond-2b-chest-pain']);
      assert.deepEqual(ids(store.search('MedicationRequest', 'encounter=enc-1a,enc-3a')), ['medreq-1-metformin', 'medreq-3-albuterol', 'medreq-3a-amoxicillin']);
      assert.deepEqual(store.search('Observation', 'encounter=Patient/enc-2b'), []);
    });

    it('date with eq/ge/le/gt/lt prefixes at day precision', () => {
      const obsOn = (q: string) => ids(store.search('Observation', `patient=pat-1&${q}`));
      assert.deepEqual(obsOn('date=2026-01-20'), ['obs-1b-glucose', 'obs-1b-hr']);
      assert.deepEqual(obsOn('date=eq2026-01-20'), ['obs-1b-glucose', 'obs-1b-hr']);
      assert.deepEqual(obsOn('date=eq2026-01-20T23:59:00Z'), ['obs-1b-glucose', 'obs-1b-hr'], 'time ignored');
      assert.deepEqual(obsOn('date=ge2025-10-02'), ['obs-1-brca', 'obs-1b-glucose', 'obs-1b-hr']);
      assert.deepEqual(obsOn('date=gt2025-10-02'), ['obs-1b-glucose', 'obs-1b-hr']);
      assert.deepEqual(obsOn('date=le2025-10-02'), ['obs-1-brca', 'obs-1a-bp', 'obs-1a-glucose', 'obs-1a-hba1c', 'obs-1a-smoking', 'obs-1a-weight']);
      assert.deepEqual(obsOn('date=lt2025-10-02'), ['obs-1a-bp', 'obs-1a-glucose', 'obs-1a-hba1c', 'obs-1a-smoking', 'obs-1a-weight']);
      assert.deepEqual(obsOn('date=ne2025-09-15'), ['obs-1-brca', 'obs-1b-glucose', 'obs-1b-hr']);
      assert.deepEqual(obsOn('date=ge2025-09-16&date=le2026-01-19'), ['obs-1-brca'], 'repeated parameter ⇒ AND (range)');
      assert.deepEqual(obsOn('date=2025-10-02,2026-01-20'), ['obs-1-brca', 'obs-1b-glucose', 'obs-1b-hr'], 'comma ⇒ OR');
      assert.deepEqual(obsOn('date=2025-10'), ['obs-1-brca'], 'month precision');
      assert.deepEqual(obsOn('date=gt2025-09'), ['obs-1-brca', 'obs-1b-glucose', 'obs-1b-hr'], 'gt a month starts after it');
      assert.deepEqual(obsOn('date=2026').length, 2);
    });

    it('date on Encounter.period.start, Condition recorded/onset, MedicationRequest.authoredOn; birthdate', () => {
      assert.deepEqual(ids(store.search('Encounter', 'date=ge2026-01-01')), ['enc-1b', 'enc-2b', 'enc-3a']);
      assert.deepEqual(ids(store.search('Encounter', 'date=lt2025-10-01')), ['enc-1a']);
      assert.deepEqual(ids(store.search('Encounter', 'date=2026-02-10')), ['enc-2b']);
      assert.deepEqual(ids(store.search('Condition', 'date=2021-08-01')), ['cond-2-oud'], 'onsetDateTime');
      assert.deepEqual(ids(store.search('Condition', 'date=2025-11-04')), ['cond-2-hypertension', 'cond-2-oud'], 'recordedDate');
      assert.deepEqual(ids(store.search('MedicationRequest', 'date=gt2026-02-11')), ['medreq-3-albuterol', 'medreq-3a-amoxicillin']);
      assert.deepEqual(ids(store.search('MedicationRequest', 'date=le2025-11-04')), ['medreq-1-metformin', 'medreq-2-lisinopril']);
      assert.deepEqual(ids(store.search('Patient', 'birthdate=lt1960-01-01')), ['pat-2']);
      assert.deepEqual(store.search('Practitioner', 'date=2026'), []);
    });

    it('identifier, name, family, given, gender on Patient', () => {
      assert.deepEqual(ids(store.search('Patient', `identifier=${MRN}|MRN-10002`)), ['pat-2']);
      assert.deepEqual(ids(store.search('Patient', 'identifier=MRN-10003')), ['pat-3']);
      assert.deepEqual(store.search('Patient', 'identifier=http://other.example|MRN-10002'), []);
      assert.equal(store.search('Patient', `identifier=${MRN}|`).length, 4);
      assert.deepEqual(ids(store.search('Patient', 'name=sha')), ['pat-1']);
      assert.deepEqual(ids(store.search('Patient', 'name=DANIEL')), ['pat-2']);
      assert.deepEqual(ids(store.search('Patient', 'name=mar,amy')), ['pat-1', 'pat-3']);
      assert.deepEqual(store.search('Patient', 'name=haw'), [], 'starts-with, not contains');
      assert.deepEqual(ids(store.search('Patient', 'family=chen')), ['pat-3']);
      assert.deepEqual(store.search('Patient', 'family=maria'), []);
      assert.deepEqual(ids(store.search('Patient', 'given=Mar')), ['pat-3']);
      assert.deepEqual(ids(store.search('Patient', 'gender=female')), ['pat-1', 'pat-3']);
      assert.deepEqual(ids(store.search('Practitioner', 'name=jane')), ['dr-smith']);
      assert.deepEqual(ids(store.search('Patient', 'name=garcía')), ['pat-2'], 'accent-insensitive');
    });

    it('ANDs different parameters', () => {
      assert.deepEqual(ids(store.search('Observation', 'patient=pat-2&category=vital-signs&date=ge2026-01-01')), ['obs-2b-bp', 'obs-2b-hr']);
      assert.deepEqual(store.search('Observation', 'patient=pat-3&code=4548-4'), []);
    });

    it('ignores unknown, control and empty parameters', () => {
      const all = ids(store.search('Observation', 'patient=pat-1'));
      assert.deepEqual(ids(store.search('Observation', 'patient=pat-1&foo=bar&_count=1&_sort=-date&_format=json&_elements=id&_include=Observation:subject&_revinclude=Provenance:target&_summary=true&_total=accurate')), all);
      assert.deepEqual(ids(store.search('Observation', 'patient=pat-1&category=&code=')), all);
      assert.deepEqual(ids(store.search('Observation', 'patient=pat-1&_lastUpdated=gt2030-01-01')), all);
    });

    it('rejects modifiers, chains and malformed dates instead of widening', () => {
      assert.throws(() => store.search('Observation', 'code:text=glucose'), SearchParameterError);
      assert.throws(() => store.search('Observation', 'patient.name=Amy'), (e: unknown) => e instanceof SearchParameterError && e.code === 'not-supported');
      assert.throws(() => store.search('Observation', 'patient:missing=true'), SearchParameterError);
      assert.throws(() => store.search('Observation', 'date=sa2025-01-01'), (e: unknown) => e instanceof SearchParameterError && e.code === 'invalid');
      assert.throws(() => store.search('Observation', 'date=yesterday'), SearchParameterError);
      // unknown parameters with modifiers are ignored like any unknown parameter
      assert.equal(store.search('Observation', 'foo:exact=x').length, store.search('Observation').length);
    });

    it('honours escaped commas and accepts name/value pairs', () => {
      const s = createDemoStore({
        resourceType: 'Bundle', type: 'collection',
        entry: [{ resource: { resourceType: 'Patient', id: 'x', name: [{ family: 'Smith, Jr' }] } }],
      });
      assert.deepEqual(ids(s.search('Patient', new URLSearchParams({ family: 'smith\\, j' }))), ['x']);
      assert.deepEqual(ids(s.search('Patient', [['family', 'smith'], ['_id', 'x']] as const)), ['x']);
    });

    it('matchesSearch checks one resource', () => {
      const hiv = store.read('Observation', 'obs-2a-hiv-vl')!;
      assert.equal(matchesSearch(hiv, 'category=laboratory&patient=pat-2'), true);
      assert.equal(matchesSearch(hiv, [['category', 'vital-signs']]), false);
    });

    it('searchParams lists what is meaningful for a type', () => {
      const names = (type: string) => store.searchParams(type).map((p) => p.name);
      assert.deepEqual(names('Observation'), ['_id', 'patient', 'subject', 'encounter', 'category', 'code', 'status', 'date']);
      assert.deepEqual(names('Patient'), ['_id', 'patient', 'identifier', 'gender', 'birthdate', 'name', 'family', 'given']);
      assert.deepEqual(names('Condition'), ['_id', 'patient', 'subject', 'encounter', 'category', 'code', 'clinical-status', 'date']);
      assert.ok(!names('Practitioner').includes('patient'));
      assert.deepEqual(store.searchParams('Observation').find((p) => p.name === 'date'), { name: 'date', type: 'date' });
    });
  });

  describe('create / update', () => {
    const fixed = new Date('2026-04-01T12:00:00.000Z');
    const security = [{ system: CONF, code: 'R' }, { system: ACTCODE, code: 'PSY' }];

    it('create assigns a uuid, versionId 1 and lastUpdated, keeping meta.security as sent', () => {
      const s = createDemoStore(undefined, { now: () => fixed });
      const input: FhirResource = {
        resourceType: 'Observation', status: 'final', code: { text: 'note' }, subject: { reference: 'Patient/pat-1' },
        meta: { versionId: '7', lastUpdated: '2000-01-01T00:00:00Z', security, tag: [{ code: 'demo' }] },
      };
      const created = s.create(input);
      assert.match(created.id!, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.equal(created.meta?.versionId, '1');
      assert.equal(created.meta?.lastUpdated, fixed.toISOString());
      assert.deepEqual(created.meta?.security, security);
      assert.deepEqual(created.meta?.tag, [{ code: 'demo' }]);
      assert.equal(input.id, undefined, 'input not mutated');
      assert.equal(input.meta?.versionId, '7');
      assert.deepEqual(s.read('Observation', created.id!), created);
      assert.ok(ids(s.search('Observation', 'patient=pat-1')).includes(created.id));
      created.status = 'amended';
      assert.equal(s.read('Observation', created.id!)!.status, 'final', 'returned a copy');
    });

    it('create uses a given id (also { id: undefined }), refuses a taken one, validates the type', () => {
      assert.equal(store.create({ resourceType: 'Basic', id: 'b-1' }).id, 'b-1');
      assert.match(store.create({ resourceType: 'Basic', id: undefined }).id!, /^[0-9a-f-]{36}$/);
      assert.throws(() => store.create({ resourceType: 'Patient', id: 'pat-1' }), (e: unknown) => e instanceof FhirStoreError && e.code === 'duplicate' && e.status === 409);
      assert.throws(() => store.create({ resourceType: 'not a type' }), (e: unknown) => e instanceof FhirStoreError && e.status === 400);
      assert.throws(() => store.create({ resourceType: 'Basic', id: 'bad id!' }), FhirStoreError);
      assert.ok(store.types().includes('Basic'));
    });

    it('update bumps versionId and keeps meta.security as sent', () => {
      const s = createDemoStore(undefined, { now: () => fixed });
      const current = s.read('Condition', 'cond-1-depression')!;
      const first = s.update('Condition', 'cond-1-depression', { ...current, note: [{ text: 'reviewed' }] });
      assert.equal(first.created, false);
      assert.equal(first.resource.meta?.versionId, '2');
      assert.equal(first.resource.meta?.lastUpdated, fixed.toISOString());
      assert.deepEqual(labels(first.resource), [`${ACTCODE}|PSY`, `${CONF}|R`]);
      const relabelled = s.update('Condition', 'cond-1-depression', { ...first.resource, meta: { security: [{ system: CONF, code: 'N' }] } });
      assert.equal(relabelled.resource.meta?.versionId, '3');
      assert.deepEqual(labels(relabelled.resource), [`${CONF}|N`]);
      assert.deepEqual(labels(s.read('Condition', 'cond-1-depression')!), [`${CONF}|N`]);
      const unlabelled = s.update('Condition', 'cond-1-depression', { resourceType: 'Condition', subject: { reference: 'Patient/pat-1' } });
      assert.equal(unlabelled.resource.meta?.versionId, '4');
      assert.equal(unlabelled.resource.meta?.security, undefined, 'labels not sent are dropped');
      assert.equal(unlabelled.resource.id, 'cond-1-depression');
    });

    it('update creates a missing resource with versionId 1', () => {
      const { resource, created } = store.update('Observation', 'obs-new', {
        resourceType: 'Observation', id: 'obs-new', status: 'final', subject: { reference: 'Patient/pat-2' }, meta: { security: [{ system: CONF, code: 'V' }] },
      });
      assert.equal(created, true);
      assert.equal(resource.meta?.versionId, '1');
      assert.deepEqual(labels(resource), [`${CONF}|V`]);
      assert.equal(store.update('Observation', 'obs-new', resource).resource.meta?.versionId, '2');
    });

    it('update rejects a mismatched type or id', () => {
      assert.throws(() => store.update('Patient', 'pat-1', { resourceType: 'Observation', id: 'pat-1' }), FhirStoreError);
      assert.throws(() => store.update('Patient', 'pat-1', { resourceType: 'Patient', id: 'pat-2' }), FhirStoreError);
      assert.throws(() => store.update('Patient', 'bad id', { resourceType: 'Patient' }), FhirStoreError);
      assert.equal(store.read('Patient', 'pat-1')!.meta?.versionId, '1');
    });
  });

  describe('independence', () => {
    it('gives every store its own copy of the data', () => {
      const a = createDemoStore();
      const b = createDemoStore();
      a.update('Patient', 'pat-1', { ...a.read('Patient', 'pat-1')!, gender: 'other' });
      a.create({ resourceType: 'Observation', id: 'only-in-a', subject: { reference: 'Patient/pat-1' } });
      assert.equal(a.read('Patient', 'pat-1')!.gender, 'other');
      assert.equal(b.read('Patient', 'pat-1')!.gender, 'female');
      assert.equal(b.read('Patient', 'pat-1')!.meta?.versionId, '1');
      assert.equal(b.read('Observation', 'only-in-a'), undefined);
      assert.equal(createDemoStore().read('Patient', 'pat-1')!.gender, 'female');
      const bundle = loadDemoBundle();
      bundle.entry!.length = 0;
      assert.equal(loadDemoBundle().entry!.length > 0, true);
    });

    it('copies a bundle it is given and rejects duplicates', () => {
      const bundle = loadDemoBundle();
      const s = createDemoStore(bundle);
      s.update('Patient', 'pat-1', { resourceType: 'Patient', id: 'pat-1' });
      const original = bundle.entry!.find((e) => e.resource?.id === 'pat-1')!.resource!;
      assert.equal(original.meta?.versionId, '1');
      assert.equal(original.gender, 'female');
      const dup = { resourceType: 'Bundle' as const, entry: [{ resource: { resourceType: 'Patient', id: 'x' } }, { resource: { resourceType: 'Patient', id: 'x' } }] };
      assert.throws(() => createDemoStore(dup), FhirStoreError);
    });
  });

  describe('capabilityStatement', () => {
    it('describes a SMART-on-FHIR R4 server with one entry per stored type', () => {
      const cs = capabilityStatement('https://smart.example/fhir/', {
        authorize: 'https://smart.example/auth', token: 'https://smart.example/token', introspect: 'https://smart.example/introspect',
      }) as any;
      assert.equal(cs.resourceType, 'CapabilityStatement');
      assert.equal(cs.status, 'active');
      assert.equal(cs.kind, 'instance');
      assert.equal(cs.fhirVersion, '4.0.1');
      assert.deepEqual(cs.format, ['json']);
      assert.match(cs.date, /^\d{4}-\d{2}-\d{2}/);
      assert.equal(cs.implementation.url, 'https://smart.example/fhir');
      assert.equal(cs.rest.length, 1);
      const rest = cs.rest[0];
      assert.equal(rest.mode, 'server');
      assert.deepEqual(rest.security.service[0].coding[0], {
        system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR', display: 'SMART-on-FHIR',
      });
      assert.deepEqual(rest.security.extension, [{
        url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
        extension: [
          { url: 'authorize', valueUri: 'https://smart.example/auth' },
          { url: 'token', valueUri: 'https://smart.example/token' },
          { url: 'introspect', valueUri: 'https://smart.example/introspect' },
        ],
      }]);
      assert.deepEqual(rest.resource.map((r: { type: string }) => r.type), createDemoStore().types());
      for (const r of rest.resource) {
        assert.deepEqual(r.interaction, [{ code: 'read' }, { code: 'search-type' }, { code: 'create' }, { code: 'update' }]);
        assert.ok(r.searchParam.some((p: { name: string }) => p.name === '_id'));
      }
      const obs = rest.resource.find((r: { type: string }) => r.type === 'Observation');
      assert.deepEqual(obs.searchParam.find((p: { name: string }) => p.name === 'patient'), { name: 'patient', type: 'reference' });
      assert.deepEqual(obs.searchParam.find((p: { name: string }) => p.name === 'category'), { name: 'category', type: 'token' });
    });

    it('lists all six oauth URIs when given and follows the store it is given', () => {
      const uris = { authorize: 'a:1', token: 'a:2', revoke: 'a:3', introspect: 'a:4', register: 'a:5', manage: 'a:6' };
      const s = createDemoStore();
      s.create({ resourceType: 'Basic', id: 'b' });
      const cs = capabilityStatement('https://x.example/fhir', uris, s) as any;
      assert.deepEqual(cs.rest[0].security.extension[0].extension.map((e: { url: string }) => e.url),
        ['authorize', 'token', 'revoke', 'introspect', 'register', 'manage']);
      assert.ok(cs.rest[0].resource.some((r: { type: string }) => r.type === 'Basic'));
    });
  });

  describe('searchBundle / operationOutcome', () => {
    it('builds a searchset Bundle', () => {
      const matches = store.search('Encounter', 'patient=pat-1');
      const b = searchBundle('https://x.example/fhir/', 'Encounter', matches, 'https://x.example/fhir/Encounter?patient=pat-1') as any;
      assert.equal(b.resourceType, 'Bundle');
      assert.equal(b.type, 'searchset');
      assert.equal(b.total, 2);
      assert.deepEqual(b.link, [{ relation: 'self', url: 'https://x.example/fhir/Encounter?patient=pat-1' }]);
      assert.deepEqual(b.entry.map((e: { fullUrl: string }) => e.fullUrl), ['https://x.example/fhir/Encounter/enc-1a', 'https://x.example/fhir/Encounter/enc-1b']);
      assert.ok(b.entry.every((e: { search: { mode: string }; resource: FhirResource }) => e.search.mode === 'match' && e.resource.resourceType === 'Encounter'));
      const empty = searchBundle('https://x.example/fhir', 'Encounter', [], 'self') as any;
      assert.equal(empty.total, 0);
      assert.deepEqual(empty.entry, []);
    });

    it('builds an OperationOutcome', () => {
      assert.deepEqual(operationOutcome('error', 'not-found', 'Patient/x is not known'), {
        resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found', diagnostics: 'Patient/x is not known' }],
      });
      assert.deepEqual(operationOutcome('information', 'informational'), {
        resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational' }],
      });
    });
  });
});
