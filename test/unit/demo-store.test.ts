import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Knex } from 'knex';

import { migrate, openDatabase } from '../../server/db.ts';
import { isInPatientCompartment, patientsOf } from '../../server/fhir/compartment.ts';
import {
  FhirStoreError,
  SearchParameterError,
  capabilityStatement,
  describeStore,
  loadDemoBundle,
  matchesSearch,
  operationOutcome,
  searchBundle,
  searchPage,
  type FhirBundle,
  type FhirResource,
  type FhirStore,
} from '../../server/fhir/demo-store.ts';
import { createDbStore, seedDemoResources } from '../../server/fhir/store-db.ts';

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

// Every store is a fresh SQLite :memory: database, migrated and seeded; closed after each test.
const opened: Knex[] = [];
async function openStore(options: { now?: () => Date; bundle?: FhirBundle } = {}): Promise<FhirStore> {
  const db = openDatabase('sqlite::memory:');
  opened.push(db);
  await migrate(db);
  await seedDemoResources(db, options.bundle);
  return createDbStore(db, { now: options.now });
}
async function closeStores() {
  await Promise.all(opened.splice(0).map((db) => db.destroy()));
}

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
  afterEach(closeStores);
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

  it('gives each non-test patient an encounter, observations of ≥2 categories, a condition and a medication request', async () => {
    const store = await openStore();
    const real = resources.filter((r) => r.resourceType === 'Patient' && !labels(r).includes(`${ACTREASON}|HTEST`));
    assert.ok(real.length >= 3);
    for (const p of real) {
      const q = `patient=${p.id}`;
      assert.ok((await store.search('Encounter', q)).length >= 1, `${p.id} encounters`);
      const categories = new Set((await store.search('Observation', q)).flatMap((o) => (o.category as unknown[]).flatMap(codings)).map((c) => c.code));
      assert.ok(categories.size >= 2, `${p.id} observation categories ${[...categories]}`);
      assert.ok((await store.search('Condition', q)).length >= 1, `${p.id} conditions`);
      assert.ok((await store.search('MedicationRequest', q)).length >= 1, `${p.id} medication requests`);
    }
    assert.deepEqual(ids(await store.search('Encounter', 'patient=pat-1')), ['enc-1a', 'enc-1b']);
    assert.deepEqual(ids(await store.search('Encounter', 'patient=pat-2')), ['enc-2a', 'enc-2b']);
    assert.deepEqual(ids(await store.search('Encounter', 'patient=pat-3')), ['enc-3a']);
    assert.deepEqual(await store.search('Encounter', 'patient=pat-4'), []);
  });

  it('uses the expected code systems and observation codes', async () => {
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

  it('dates observations and encounters in 2025–2026', async () => {
    for (const o of ofType('Observation')) assert.match(String(o.effectiveDateTime), /^202[56]-/, o.id);
    for (const e of ofType('Encounter')) assert.match(String((e.period as { start: string }).start), /^202[56]-/, e.id);
  });

  it('labels exactly the sensitive resources', async () => {
    const labelled = Object.fromEntries(resources.filter((r) => labels(r).length > 0).map((r) => [`${r.resourceType}/${r.id}`, labels(r)]));
    assert.deepEqual(labelled, {
      'Patient/pat-4': [`${ACTREASON}|HTEST`],
      'Condition/cond-1-depression': [`${ACTCODE}|PSY`, `${CONF}|R`],
      'Observation/obs-2a-hiv-vl': [`${ACTCODE}|HIV`, `${CONF}|R`],
      'Condition/cond-2-oud': [`${ACTCODE}|SUD`],
      'Condition/cond-3-sickle-trait': [`${ACTCODE}|SICKLE`], // a code the policy file does not list: an unknown sensitivity
      'Observation/obs-1-brca': [`${CONF}|V`],
    });
    assert.ok(codings(find('Observation', 'obs-2a-hiv-vl')!.code).some((c) => c.code === '20447-9'));
    assert.deepEqual(patientsOf(find('Condition', 'cond-1-depression')!), ['pat-1']);
    assert.deepEqual(patientsOf(find('Observation', 'obs-1-brca')!), ['pat-1']);
    assert.deepEqual(patientsOf(find('Observation', 'obs-2a-hiv-vl')!), ['pat-2']);
    assert.deepEqual(patientsOf(find('Condition', 'cond-2-oud')!), ['pat-2']);
  });

  it('resolves every reference inside the bundle, all of them relative', async () => {
    const keys = new Set(resources.map((r) => `${r.resourceType}/${r.id}`));
    const refs = resources.flatMap((r) => referencesIn(r));
    assert.ok(refs.length > 100);
    for (const reference of refs) {
      assert.match(reference, /^[A-Z][A-Za-z]+\/[a-z0-9-]+$/);
      assert.ok(keys.has(reference), `unresolved ${reference}`);
    }
  });

  it('has every encounter-linked resource point at an encounter of the same patient', async () => {
    for (const r of resources) {
      const enc = (r.encounter as { reference?: string } | undefined)?.reference;
      if (!enc) continue;
      const encounter = find('Encounter', enc.split('/')[1])!;
      assert.deepEqual(patientsOf(r), patientsOf(encounter), `${r.resourceType}/${r.id}`);
    }
  });
});

describe('fhir/demo-store (database)', () => {
  let store: FhirStore;
  beforeEach(async () => { store = await openStore(); });
  afterEach(closeStores);

  describe('read / types', () => {
    it('reads by type and id', async () => {
      const p = (await store.read('Patient', 'pat-1'))!;
      assert.equal(p.resourceType, 'Patient');
      assert.equal(p.id, 'pat-1');
      assert.equal(await store.read('Patient', 'nope'), undefined);
      assert.equal(await store.read('Observation', 'pat-1'), undefined);
      assert.equal(await store.read('constructor', 'x'), undefined);
    });

    it('returns copies', async () => {
      const p = (await store.read('Patient', 'pat-1'))!;
      p.gender = 'other';
      (await store.search('Patient', '_id=pat-1'))[0].gender = 'other';
      assert.equal((await store.read('Patient', 'pat-1'))!.gender, 'female');
    });

    it('lists the types present', async () => {
      assert.deepEqual(await store.types(), [
        'AllergyIntolerance', 'Condition', 'Consent', 'Encounter', 'Immunization', 'MedicationRequest', 'Observation',
        'Organization', 'Patient', 'Practitioner', 'Provenance', 'RelatedPerson',
      ]);
    });
  });

  describe('search', () => {
    it('with no parameters returns the whole type in id order', async () => {
      assert.deepEqual((await store.search('Patient')).map((p) => p.id), ['pat-1', 'pat-2', 'pat-3', 'pat-4']);
      assert.deepEqual((await store.search('Patient', new URLSearchParams())).map((p) => p.id), ['pat-1', 'pat-2', 'pat-3', 'pat-4']);
      assert.deepEqual(await store.search('Basic'), []);
    });

    it('_id, with OR values', async () => {
      assert.deepEqual(ids(await store.search('Patient', '_id=pat-2')), ['pat-2']);
      assert.deepEqual(ids(await store.search('Patient', '_id=pat-2,pat-3,nope')), ['pat-2', 'pat-3']);
      assert.deepEqual(await store.search('Observation', '_id=pat-2'), []);
    });

    it('patient=Patient/pat-1 returns only pat-1 data', async () => {
      for (const type of ['Observation', 'Condition', 'Encounter', 'MedicationRequest', 'AllergyIntolerance', 'Immunization']) {
        const all = await store.search(type);
        const viaRef = await store.search(type, new URLSearchParams({ patient: 'Patient/pat-1' }));
        const viaId = await store.search(type, 'patient=pat-1');
        assert.deepEqual(ids(viaRef), ids(viaId), type);
        assert.deepEqual(ids(viaRef), ids(all.filter((r) => isInPatientCompartment(r, 'pat-1'))), type);
        for (const r of viaRef) assert.deepEqual(patientsOf(r), ['pat-1'], `${type}/${r.id}`);
      }
      assert.deepEqual(ids(await store.search('Observation', 'patient=Patient/pat-1')), [
        'obs-1-brca', 'obs-1a-bp', 'obs-1a-glucose', 'obs-1a-hba1c', 'obs-1a-smoking', 'obs-1a-weight', 'obs-1b-glucose', 'obs-1b-hr',
      ]);
      assert.deepEqual(ids(await store.search('AllergyIntolerance', 'patient=pat-1')), ['allergy-1-penicillin']);
      assert.deepEqual(ids(await store.search('Immunization', 'patient=pat-2')), ['imm-2-flu']);
      assert.deepEqual(ids(await store.search('Patient', 'patient=pat-3')), ['pat-3']);
      assert.deepEqual(ids(await store.search('RelatedPerson', 'patient=pat-3')), ['rp-3-mother']);
    });

    it('patient accepts OR values, absolute references, and nothing but Patient', async () => {
      assert.equal((await store.search('Condition', 'patient=pat-1,pat-2')).length,
        (await store.search('Condition', 'patient=pat-1')).length + (await store.search('Condition', 'patient=pat-2')).length);
      assert.deepEqual(ids(await store.search('Encounter', 'patient=https://ehr.example/fhir/Patient/pat-3')), ['enc-3a']);
      assert.deepEqual(await store.search('Observation', 'patient=Practitioner/dr-smith'), []);
      assert.deepEqual(await store.search('Observation', 'patient=Group/pat-1'), []);
      assert.deepEqual(await store.search('Observation', 'patient=not a reference/x/'), []);
      // Types with no patient element never match a patient restriction.
      assert.deepEqual(await store.search('Practitioner', 'patient=pat-1'), []);
    });

    it('subject reads the subject element', async () => {
      assert.deepEqual(ids(await store.search('Encounter', 'subject=Patient/pat-1')), ['enc-1a', 'enc-1b']);
      assert.deepEqual(ids(await store.search('MedicationRequest', 'subject=pat-3')), ['medreq-3-albuterol', 'medreq-3a-amoxicillin']);
      assert.deepEqual(await store.search('Observation', 'subject=Group/pat-1'), []);
      // Observation.performer is a compartment path but not the subject.
      assert.deepEqual(await store.search('Observation', 'subject=Practitioner/dr-smith'), []);
    });

    it('category: system|code, code, system|, |code, OR', async () => {
      const labs = ids(await store.search('Observation', `category=${OBS_CAT}|laboratory`));
      assert.deepEqual(labs, ['obs-1-brca', 'obs-1a-glucose', 'obs-1a-hba1c', 'obs-1b-glucose', 'obs-2a-glucose', 'obs-2a-hiv-vl', 'obs-3a-hgb']);
      assert.deepEqual(ids(await store.search('Observation', 'category=laboratory')), labs);
      assert.deepEqual(await store.search('Observation', 'category=http://other.example|laboratory'), []);
      assert.deepEqual(await store.search('Observation', 'category=|laboratory'), [], 'the codings have a system');
      assert.equal((await store.search('Observation', `category=${OBS_CAT}|`)).length, (await store.search('Observation')).length);
      const vitals = await store.search('Observation', 'category=vital-signs');
      const both = await store.search('Observation', new URLSearchParams({ category: `laboratory,${OBS_CAT}|vital-signs` }));
      assert.equal(both.length, labs.length + vitals.length);
      assert.deepEqual(ids(await store.search('Observation', 'category=survey')), ['obs-2b-pain']);
      assert.deepEqual(ids(await store.search('Observation', 'category=social-history')), ['obs-1a-smoking', 'obs-2a-smoking']);
      assert.deepEqual(ids(await store.search('Condition', `category=${COND_CAT}|encounter-diagnosis`)), ['cond-1b-bronchitis', 'cond-2b-chest-pain', 'cond-3a-strep']);
      assert.deepEqual(ids(await store.search('AllergyIntolerance', 'category=medication')), ['allergy-1-penicillin'], 'primitive code');
      assert.deepEqual(await store.search('AllergyIntolerance', 'category=http://hl7.org/fhir/allergy-intolerance-category|medication'), []);
    });

    it('code over code and medicationCodeableConcept, vaccine-code', async () => {
      assert.deepEqual(ids(await store.search('Observation', `code=${LOINC}|4548-4`)), ['obs-1a-hba1c']);
      assert.deepEqual(ids(await store.search('Observation', 'code=2345-7')), ['obs-1a-glucose', 'obs-1b-glucose', 'obs-2a-glucose']);
      assert.deepEqual(ids(await store.search('Observation', 'code=8867-4,29463-7&patient=pat-3')), ['obs-3a-hr', 'obs-3a-weight']);
      assert.deepEqual(ids(await store.search('Condition', `code=${SCT}|44054006`)), ['cond-1-diabetes']);
      assert.deepEqual(ids(await store.search('MedicationRequest', `code=${RXNORM}|314076`)), ['medreq-2-lisinopril']);
      assert.deepEqual(ids(await store.search('Immunization', 'vaccine-code=http://hl7.org/fhir/sid/cvx|150')), ['imm-2-flu']);
      assert.deepEqual(await store.search('Observation', 'code=8480-6'), [], 'component codes are not the code');
    });

    it('status and clinical-status', async () => {
      assert.equal((await store.search('Observation', 'status=final')).length, (await store.search('Observation')).length);
      assert.deepEqual(await store.search('Observation', 'status=preliminary'), []);
      assert.deepEqual(ids(await store.search('MedicationRequest', 'status=completed')), ['medreq-3a-amoxicillin']);
      assert.equal((await store.search('MedicationRequest', 'status=active,completed')).length, (await store.search('MedicationRequest')).length);
      assert.deepEqual(ids(await store.search('Condition', 'clinical-status=resolved')), ['cond-1b-bronchitis', 'cond-2b-chest-pain', 'cond-3a-strep']);
      assert.deepEqual(await store.search('Condition', 'status=active'), [], 'Condition has no status element');
    });

    it('encounter', async () => {
      assert.deepEqual(ids(await store.search('Observation', 'encounter=enc-2b')), ['obs-2b-bp', 'obs-2b-hr', 'obs-2b-pain']);
      assert.deepEqual(ids(await store.search('Condition', 'encounter=Encounter/enc-2b')), ['cond-2b-chest-pain']);
      assert.deepEqual(ids(await store.search('MedicationRequest', 'encounter=enc-1a,enc-3a')), ['medreq-1-metformin', 'medreq-3-albuterol', 'medreq-3a-amoxicillin']);
      assert.deepEqual(await store.search('Observation', 'encounter=Patient/enc-2b'), []);
    });

    it('date with eq/ge/le/gt/lt prefixes at day precision', async () => {
      const obsOn = async (q: string) => ids(await store.search('Observation', `patient=pat-1&${q}`));
      assert.deepEqual(await obsOn('date=2026-01-20'), ['obs-1b-glucose', 'obs-1b-hr']);
      assert.deepEqual(await obsOn('date=eq2026-01-20'), ['obs-1b-glucose', 'obs-1b-hr']);
      assert.deepEqual(await obsOn('date=eq2026-01-20T23:59:00Z'), ['obs-1b-glucose', 'obs-1b-hr'], 'time ignored');
      assert.deepEqual(await obsOn('date=ge2025-10-02'), ['obs-1-brca', 'obs-1b-glucose', 'obs-1b-hr']);
      assert.deepEqual(await obsOn('date=gt2025-10-02'), ['obs-1b-glucose', 'obs-1b-hr']);
      assert.deepEqual(await obsOn('date=le2025-10-02'), ['obs-1-brca', 'obs-1a-bp', 'obs-1a-glucose', 'obs-1a-hba1c', 'obs-1a-smoking', 'obs-1a-weight']);
      assert.deepEqual(await obsOn('date=lt2025-10-02'), ['obs-1a-bp', 'obs-1a-glucose', 'obs-1a-hba1c', 'obs-1a-smoking', 'obs-1a-weight']);
      assert.deepEqual(await obsOn('date=ne2025-09-15'), ['obs-1-brca', 'obs-1b-glucose', 'obs-1b-hr']);
      assert.deepEqual(await obsOn('date=ge2025-09-16&date=le2026-01-19'), ['obs-1-brca'], 'repeated parameter ⇒ AND (range)');
      assert.deepEqual(await obsOn('date=2025-10-02,2026-01-20'), ['obs-1-brca', 'obs-1b-glucose', 'obs-1b-hr'], 'comma ⇒ OR');
      assert.deepEqual(await obsOn('date=2025-10'), ['obs-1-brca'], 'month precision');
      assert.deepEqual(await obsOn('date=gt2025-09'), ['obs-1-brca', 'obs-1b-glucose', 'obs-1b-hr'], 'gt a month starts after it');
      assert.deepEqual((await obsOn('date=2026')).length, 2);
    });

    it('date on Encounter.period.start, Condition recorded/onset, MedicationRequest.authoredOn; birthdate', async () => {
      assert.deepEqual(ids(await store.search('Encounter', 'date=ge2026-01-01')), ['enc-1b', 'enc-2b', 'enc-3a']);
      assert.deepEqual(ids(await store.search('Encounter', 'date=lt2025-10-01')), ['enc-1a']);
      assert.deepEqual(ids(await store.search('Encounter', 'date=2026-02-10')), ['enc-2b']);
      assert.deepEqual(ids(await store.search('Condition', 'date=2021-08-01')), ['cond-2-oud'], 'onsetDateTime');
      assert.deepEqual(ids(await store.search('Condition', 'date=2025-11-04')), ['cond-2-hypertension', 'cond-2-oud'], 'recordedDate');
      assert.deepEqual(ids(await store.search('MedicationRequest', 'date=gt2026-02-11')), ['medreq-3-albuterol', 'medreq-3a-amoxicillin']);
      assert.deepEqual(ids(await store.search('MedicationRequest', 'date=le2025-11-04')), ['medreq-1-metformin', 'medreq-2-lisinopril']);
      assert.deepEqual(ids(await store.search('Patient', 'birthdate=lt1960-01-01')), ['pat-2']);
      assert.deepEqual(await store.search('Practitioner', 'date=2026'), []);
    });

    it('identifier, name, family, given, gender on Patient', async () => {
      assert.deepEqual(ids(await store.search('Patient', `identifier=${MRN}|MRN-10002`)), ['pat-2']);
      assert.deepEqual(ids(await store.search('Patient', 'identifier=MRN-10003')), ['pat-3']);
      assert.deepEqual(await store.search('Patient', 'identifier=http://other.example|MRN-10002'), []);
      assert.equal((await store.search('Patient', `identifier=${MRN}|`)).length, 4);
      assert.deepEqual(ids(await store.search('Patient', 'name=sha')), ['pat-1']);
      assert.deepEqual(ids(await store.search('Patient', 'name=DANIEL')), ['pat-2']);
      assert.deepEqual(ids(await store.search('Patient', 'name=mar,amy')), ['pat-1', 'pat-3']);
      assert.deepEqual(await store.search('Patient', 'name=haw'), [], 'starts-with, not contains');
      assert.deepEqual(ids(await store.search('Patient', 'family=chen')), ['pat-3']);
      assert.deepEqual(await store.search('Patient', 'family=maria'), []);
      assert.deepEqual(ids(await store.search('Patient', 'given=Mar')), ['pat-3']);
      assert.deepEqual(ids(await store.search('Patient', 'gender=female')), ['pat-1', 'pat-3']);
      assert.deepEqual(ids(await store.search('Practitioner', 'name=jane')), ['dr-smith']);
      assert.deepEqual(ids(await store.search('Patient', 'name=garcía')), ['pat-2'], 'accent-insensitive');
    });

    it('ANDs different parameters', async () => {
      assert.deepEqual(ids(await store.search('Observation', 'patient=pat-2&category=vital-signs&date=ge2026-01-01')), ['obs-2b-bp', 'obs-2b-hr']);
      assert.deepEqual(await store.search('Observation', 'patient=pat-3&code=4548-4'), []);
    });

    it('ignores unknown, control and empty parameters', async () => {
      const all = ids(await store.search('Observation', 'patient=pat-1'));
      assert.deepEqual(ids(await store.search('Observation', 'patient=pat-1&foo=bar&_count=1&_sort=-date&_format=json&_elements=id&_include=Observation:subject&_revinclude=Provenance:target&_summary=true&_total=accurate')), all);
      assert.deepEqual(ids(await store.search('Observation', 'patient=pat-1&category=&code=')), all);
    });

    it('searches _lastUpdated as a date', async () => {
      const all = ids(await store.search('Observation', 'patient=pat-1'));
      assert.deepEqual(ids(await store.search('Observation', 'patient=pat-1&_lastUpdated=gt2100-01-01')), []);
      assert.deepEqual(ids(await store.search('Observation', 'patient=pat-1&_lastUpdated=lt2100-01-01')), all);
    });

    it('rejects modifiers, chains and malformed dates instead of widening', async () => {
      await assert.rejects(() => store.search('Observation', 'code:text=glucose'), SearchParameterError);
      await assert.rejects(() => store.search('Observation', 'patient.name=Amy'), (e: unknown) => e instanceof SearchParameterError && e.code === 'not-supported');
      await assert.rejects(() => store.search('Observation', 'patient:missing=true'), SearchParameterError);
      await assert.rejects(() => store.search('Observation', 'date=sa2025-01-01'), (e: unknown) => e instanceof SearchParameterError && e.code === 'invalid');
      await assert.rejects(() => store.search('Observation', 'date=yesterday'), SearchParameterError);
      // unknown parameters with modifiers are ignored like any unknown parameter
      assert.equal((await store.search('Observation', 'foo:exact=x')).length, (await store.search('Observation')).length);
    });

    it('honours escaped commas and accepts name/value pairs', async () => {
      const s = await openStore({
        bundle: { resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Patient', id: 'x', name: [{ family: 'Smith, Jr' }] } }] },
      });
      assert.deepEqual(ids(await s.search('Patient', new URLSearchParams({ family: 'smith\\, j' }))), ['x']);
      assert.deepEqual(ids(await s.search('Patient', [['family', 'smith'], ['_id', 'x']] as const)), ['x']);
    });

    it('matchesSearch checks one resource', async () => {
      const hiv = (await store.read('Observation', 'obs-2a-hiv-vl'))!;
      assert.equal(matchesSearch(hiv, 'category=laboratory&patient=pat-2'), true);
      assert.equal(matchesSearch(hiv, [['category', 'vital-signs']]), false);
    });

    it('searchParams lists what is meaningful for a type', async () => {
      const names = async (type: string) => (await store.searchParams(type)).map((p) => p.name);
      assert.deepEqual(await names('Observation'), ['_id', 'patient', 'subject', 'encounter', 'category', 'code', 'status', 'date', '_lastUpdated', 'performer']);
      assert.deepEqual(await names('Patient'), ['_id', 'patient', 'identifier', 'gender', 'birthdate', '_lastUpdated', 'name', 'family', 'given', 'general-practitioner', 'organization']);
      assert.deepEqual(await names('Condition'), ['_id', 'patient', 'subject', 'encounter', 'category', 'code', 'clinical-status', 'date', 'onset-date', 'recorded-date', '_lastUpdated', 'asserter', 'recorder']);
      assert.deepEqual(await names('Provenance'), ['_id', 'patient', 'subject', '_lastUpdated', 'target', 'agent']);
      assert.ok(!(await names('Practitioner')).includes('patient'));
      assert.deepEqual((await store.searchParams('Encounter')).find((p) => p.name === 'participant'), { name: 'participant', type: 'reference' });
      assert.deepEqual((await store.searchParams('Observation')).find((p) => p.name === 'date'), { name: 'date', type: 'date' });
    });
  });

  describe('create / update', () => {
    const fixed = new Date('2026-04-01T12:00:00.000Z');
    const security = [{ system: CONF, code: 'R' }, { system: ACTCODE, code: 'PSY' }];

    it('create assigns a uuid, versionId 1 and lastUpdated, keeping meta.security as sent', async () => {
      const s = await openStore({ now: () => fixed });
      const input: FhirResource = {
        resourceType: 'Observation', status: 'final', code: { text: 'note' }, subject: { reference: 'Patient/pat-1' },
        meta: { versionId: '7', lastUpdated: '2000-01-01T00:00:00Z', security, tag: [{ code: 'demo' }] },
      };
      const created = await s.create(input);
      assert.match(created.id!, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.equal(created.meta?.versionId, '1');
      assert.equal(created.meta?.lastUpdated, fixed.toISOString());
      assert.deepEqual(created.meta?.security, security);
      assert.deepEqual(created.meta?.tag, [{ code: 'demo' }]);
      assert.equal(input.id, undefined, 'input not mutated');
      assert.equal(input.meta?.versionId, '7');
      assert.deepEqual(await s.read('Observation', created.id!), created);
      assert.ok(ids(await s.search('Observation', 'patient=pat-1')).includes(created.id));
      created.status = 'amended';
      assert.equal((await s.read('Observation', created.id!))!.status, 'final', 'returned a copy');
    });

    it('create uses a given id (also { id: undefined }), refuses a taken one, validates the type', async () => {
      assert.equal((await store.create({ resourceType: 'Basic', id: 'b-1' })).id, 'b-1');
      assert.match((await store.create({ resourceType: 'Basic', id: undefined })).id!, /^[0-9a-f-]{36}$/);
      await assert.rejects(() => store.create({ resourceType: 'Patient', id: 'pat-1' }), (e: unknown) => e instanceof FhirStoreError && e.code === 'duplicate' && e.status === 409);
      await assert.rejects(() => store.create({ resourceType: 'not a type' }), (e: unknown) => e instanceof FhirStoreError && e.status === 400);
      await assert.rejects(() => store.create({ resourceType: 'Basic', id: 'bad id!' }), FhirStoreError);
      assert.ok((await store.types()).includes('Basic'));
    });

    it('update bumps versionId and keeps meta.security as sent', async () => {
      const s = await openStore({ now: () => fixed });
      const current = (await s.read('Condition', 'cond-1-depression'))!;
      const first = await s.update('Condition', 'cond-1-depression', { ...current, note: [{ text: 'reviewed' }] });
      assert.equal(first.created, false);
      assert.equal(first.resource.meta?.versionId, '2');
      assert.equal(first.resource.meta?.lastUpdated, fixed.toISOString());
      assert.deepEqual(labels(first.resource), [`${ACTCODE}|PSY`, `${CONF}|R`]);
      const relabelled = await s.update('Condition', 'cond-1-depression', { ...first.resource, meta: { security: [{ system: CONF, code: 'N' }] } });
      assert.equal(relabelled.resource.meta?.versionId, '3');
      assert.deepEqual(labels(relabelled.resource), [`${CONF}|N`]);
      assert.deepEqual(labels((await s.read('Condition', 'cond-1-depression'))!), [`${CONF}|N`]);
      const unlabelled = await s.update('Condition', 'cond-1-depression', { resourceType: 'Condition', subject: { reference: 'Patient/pat-1' } });
      assert.equal(unlabelled.resource.meta?.versionId, '4');
      assert.equal(unlabelled.resource.meta?.security, undefined, 'labels not sent are dropped');
      assert.equal(unlabelled.resource.id, 'cond-1-depression');
    });

    it('update creates a missing resource with versionId 1', async () => {
      const { resource, created } = await store.update('Observation', 'obs-new', {
        resourceType: 'Observation', id: 'obs-new', status: 'final', subject: { reference: 'Patient/pat-2' }, meta: { security: [{ system: CONF, code: 'V' }] },
      });
      assert.equal(created, true);
      assert.equal(resource.meta?.versionId, '1');
      assert.deepEqual(labels(resource), [`${CONF}|V`]);
      assert.equal((await store.update('Observation', 'obs-new', resource)).resource.meta?.versionId, '2');
    });

    it('update rejects a mismatched type or id', async () => {
      await assert.rejects(() => store.update('Patient', 'pat-1', { resourceType: 'Observation', id: 'pat-1' }), FhirStoreError);
      await assert.rejects(() => store.update('Patient', 'pat-1', { resourceType: 'Patient', id: 'pat-2' }), FhirStoreError);
      await assert.rejects(() => store.update('Patient', 'bad id', { resourceType: 'Patient' }), FhirStoreError);
      assert.equal((await store.read('Patient', 'pat-1'))!.meta?.versionId, '1');
    });
  });

  describe('versions and optimistic locking', () => {
    it('update with If-Match succeeds on the current version only (412 otherwise)', async () => {
      const current = (await store.read('Patient', 'pat-2'))!;
      const v2 = await store.update('Patient', 'pat-2', { ...current, active: false }, { ifMatch: '1' });
      assert.equal(v2.resource.meta?.versionId, '2');
      await assert.rejects(() => store.update('Patient', 'pat-2', current, { ifMatch: '1' }),
        (e: unknown) => e instanceof FhirStoreError && e.code === 'conflict' && e.status === 412);
      await assert.rejects(() => store.update('Patient', 'nobody', { resourceType: 'Patient' }, { ifMatch: '1' }),
        (e: unknown) => e instanceof FhirStoreError && e.status === 412, 'If-Match on a missing resource');
      assert.equal(await store.read('Patient', 'nobody'), undefined);
      await assert.rejects(() => store.update('Patient', 'pat-2', { resourceType: 'Observation' }, { ifMatch: '1' }),
        (e: unknown) => e instanceof FhirStoreError && e.status === 400, 'a bad request before a version check');
      const v3 = await store.update('Patient', 'pat-2', v2.resource, { ifMatch: '2' });
      assert.equal(v3.resource.meta?.versionId, '3');
      assert.equal((await store.read('Patient', 'pat-2'))!.active, false);
    });

    it('concurrent updates without If-Match each get their own version', async () => {
      const current = (await store.read('Observation', 'obs-1a-weight'))!;
      const results = await Promise.all([1, 2, 3, 4].map((n) =>
        store.update('Observation', 'obs-1a-weight', { ...current, note: [{ text: `writer ${n}` }] })));
      assert.deepEqual(results.map((r) => r.resource.meta?.versionId).sort(), ['2', '3', '4', '5']);
      assert.equal((await store.read('Observation', 'obs-1a-weight'))!.meta?.versionId, '5');
    });

    it('concurrent updates with the same If-Match: one wins, the others get 412', async () => {
      const current = (await store.read('Observation', 'obs-1a-weight'))!;
      const results = await Promise.allSettled([1, 2, 3].map(() => store.update('Observation', 'obs-1a-weight', current, { ifMatch: '1' })));
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as FhirStoreError).status, 412);
    });

    it('refuses malformed meta and Bundles with 422', async () => {
      await assert.rejects(() => store.create({ resourceType: 'Basic', meta: 'x' as never }), (e: unknown) => e instanceof FhirStoreError && e.status === 422);
      await assert.rejects(() => store.create({ resourceType: 'Basic', meta: { security: {} as never } }), (e: unknown) => e instanceof FhirStoreError && e.status === 422);
      await assert.rejects(() => store.create({ resourceType: 'Bundle' }), (e: unknown) => e instanceof FhirStoreError && e.code === 'processing');
    });
  });

  describe('persistence and seeding', () => {
    let dir: string;
    beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'smart-auth-store-')); });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it('shares one database between store instances and keeps it across connections', async () => {
      const url = `sqlite:${join(dir, 'fhir.sqlite')}`;
      const db1 = openDatabase(url);
      opened.push(db1);
      await migrate(db1);
      assert.equal(await seedDemoResources(db1), true);
      const a = createDbStore(db1);
      const b = createDbStore(db1);
      await a.update('Patient', 'pat-1', { ...(await a.read('Patient', 'pat-1'))!, gender: 'other' });
      await a.create({ resourceType: 'Observation', id: 'only-in-db', subject: { reference: 'Patient/pat-1' } });
      assert.equal((await b.read('Patient', 'pat-1'))!.gender, 'other');
      assert.ok(ids(await b.search('Observation', 'patient=pat-1')).includes('only-in-db'));
      await db1.destroy();
      opened.splice(opened.indexOf(db1), 1);

      const db2 = openDatabase(url);
      opened.push(db2);
      await migrate(db2);
      assert.equal(await seedDemoResources(db2), false, 'not seeded twice');
      const c = createDbStore(db2);
      assert.equal((await c.read('Patient', 'pat-1'))!.gender, 'other');
      assert.equal((await c.read('Patient', 'pat-1'))!.meta?.versionId, '2');
      assert.ok(await c.read('Observation', 'only-in-db'));
    });

    it('keeps separate databases apart', async () => {
      const a = await openStore();
      const b = await openStore();
      await a.update('Patient', 'pat-1', { ...(await a.read('Patient', 'pat-1'))!, gender: 'other' });
      assert.equal((await b.read('Patient', 'pat-1'))!.gender, 'female');
      assert.equal((await b.read('Patient', 'pat-1'))!.meta?.versionId, '1');
      const bundle = loadDemoBundle();
      bundle.entry!.length = 0;
      assert.equal(loadDemoBundle().entry!.length > 0, true);
    });

    it('seeds once, also when two processes seed the same database at once', async () => {
      const url = `sqlite:${join(dir, 'fhir.sqlite')}`;
      const [db1, db2] = [openDatabase(url), openDatabase(url)];
      opened.push(db1, db2);
      await migrate(db1);
      const results = await Promise.all([seedDemoResources(db1), seedDemoResources(db2), seedDemoResources(db2)]);
      assert.ok(results.includes(true));
      const expected = loadDemoBundle().entry!.length;
      assert.equal(Number((await db1('fhir_resources').count({ n: '*' }))[0].n), expected);
      assert.equal(await seedDemoResources(db1), false);
      assert.equal((await createDbStore(db2).search('Patient')).length, 4);
    });

    it('seeds the bundle it is given, without changing it, and rejects duplicates', async () => {
      const bundle = loadDemoBundle();
      const s = await openStore({ bundle });
      await s.update('Patient', 'pat-1', { resourceType: 'Patient', id: 'pat-1' });
      const original = bundle.entry!.find((e) => e.resource?.id === 'pat-1')!.resource!;
      assert.equal(original.meta?.versionId, '1');
      assert.equal(original.gender, 'female');
      const dup = { resourceType: 'Bundle' as const, entry: [{ resource: { resourceType: 'Patient', id: 'x' } }, { resource: { resourceType: 'Patient', id: 'x' } }] };
      await assert.rejects(() => openStore({ bundle: dup }), FhirStoreError);
    });
  });

  describe('searchPage: _include, _revinclude, paging', () => {
    const BASE = 'https://fhir.example/r4';
    const page = (type: string, query: string) => searchPage(store, type, query, { base: BASE });
    const keys = (bundle: FhirBundle, mode: 'match' | 'include') => (bundle.entry ?? [])
      .filter((e) => (e.search as { mode?: string } | undefined)?.mode === mode)
      .map((e) => `${e.resource!.resourceType}/${e.resource!.id}`);

    it('_include follows the reference parameter of each match, each target once', async () => {
      const b = await page('Observation', 'patient=pat-1&_include=Observation:subject&_include=Observation:performer&_include=Observation:encounter');
      assert.equal(b.total, 8);
      assert.equal(keys(b, 'match').length, 8);
      assert.deepEqual(keys(b, 'include').sort(), ['Encounter/enc-1a', 'Encounter/enc-1b', 'Patient/pat-1', 'Practitioner/dr-smith']);
      const included = b.entry!.find((e) => e.resource!.id === 'pat-1')!;
      assert.equal(included.fullUrl, `${BASE}/Patient/pat-1`);
      // matches come first, then includes
      const modes = b.entry!.map((e) => (e.search as { mode: string }).mode);
      assert.deepEqual(modes, [...Array(8).fill('match'), ...Array(4).fill('include')]);
    });

    it('_include honours the parameter target type and an explicit target type', async () => {
      assert.deepEqual(keys(await page('Encounter', '_id=enc-1a&_include=Encounter:patient'), 'include'), ['Patient/pat-1']);
      assert.deepEqual(keys(await page('Encounter', '_id=enc-1a&_include=Encounter:participant:Organization'), 'include'), []);
      assert.deepEqual(keys(await page('Encounter', '_id=enc-1a&_include=Encounter:participant:Practitioner'), 'include'), ['Practitioner/dr-smith']);
      assert.deepEqual(keys(await page('Patient', '_id=pat-2&_include=Patient:general-practitioner&_include=Patient:organization'), 'include').sort(),
        ['Organization/example-hospital', 'Practitioner/dr-smith']);
      assert.deepEqual(keys(await page('MedicationRequest', 'patient=pat-1&_include=MedicationRequest:medication'), 'include'), [], 'medicationCodeableConcept only');
      assert.deepEqual(keys(await page('Patient', '_id=pat-1&_include=Patient:patient'), 'include'), [], 'a match is not included again');
    });

    it('_revinclude adds the resources that reference a match', async () => {
      const withProvenance = await page('Observation', '_id=obs-1a-hba1c,obs-1a-glucose&_revinclude=Provenance:target');
      assert.deepEqual(keys(withProvenance, 'include'), ['Provenance/prov-1a-hba1c']);
      assert.equal(withProvenance.total, 2);
      assert.deepEqual(keys(await page('Observation', 'patient=pat-2&_revinclude=Provenance:target'), 'include'), [], 'no Provenance for pat-2 data');
      const patient = await page('Patient', '_id=pat-3&_revinclude=Observation:subject&_revinclude=Encounter:patient');
      assert.deepEqual(keys(patient, 'match'), ['Patient/pat-3']);
      assert.deepEqual(keys(patient, 'include').sort(), ['Encounter/enc-3a', 'Observation/obs-3a-hgb', 'Observation/obs-3a-hr', 'Observation/obs-3a-weight']);
      assert.deepEqual(keys(await page('Patient', '_id=pat-3&_revinclude=Observation:subject:Encounter'), 'include'), []);
      assert.deepEqual(keys(await page('Observation', '_id=nope&_revinclude=Provenance:target'), 'include'), []);
    });

    it('_revinclude=Provenance:target is empty without Provenance', async () => {
      const bare = await openStore({ bundle: { ...loadDemoBundle(), entry: loadDemoBundle().entry!.filter((e) => e.resource?.resourceType !== 'Provenance') } });
      const b = await searchPage(bare, 'Observation', '_id=obs-1a-hba1c&_revinclude=Provenance:target', { base: BASE });
      assert.deepEqual(keys(b, 'match'), ['Observation/obs-1a-hba1c']);
      assert.deepEqual(keys(b, 'include'), []);
    });

    it('refuses includes it cannot follow rather than dropping them', async () => {
      for (const [query, code] of [
        ['_include=*', 'not-supported'],
        ['_include=Observation:*', 'not-supported'],
        ['_include:iterate=Observation:subject', 'not-supported'],
        ['_include=Observation:code', 'not-supported'],
        ['_include=Observation:nope', 'not-supported'],
        ['_include=Patient:general-practitioner', 'invalid'],
        ['_include=Observation', 'invalid'],
        ['_revinclude=Provenance:code', 'not-supported'],
        ['_revinclude=provenance:target', 'invalid'],
        ['_count=-1', 'invalid'],
        ['_count=ten', 'invalid'],
        ['_getpagesoffset=1.5', 'invalid'],
      ] as const) {
        await assert.rejects(() => page('Observation', query), (e: unknown) => e instanceof SearchParameterError && e.code === code, query);
      }
    });

    it('pages with _count and next links on its own base; total counts matches only', async () => {
      const first = await page('Observation', 'patient=pat-1&_count=3&_include=Observation:subject');
      assert.equal(first.total, 8);
      assert.equal(keys(first, 'match').length, 3);
      assert.deepEqual(keys(first, 'include'), ['Patient/pat-1']);
      const links = (b: FhirBundle) => Object.fromEntries((b.link as { relation: string; url: string }[]).map((l) => [l.relation, l.url]));
      assert.equal(links(first).self, `${BASE}/Observation?patient=pat-1&_count=3&_include=Observation%3Asubject`);
      assert.equal(links(first).previous, undefined);
      const seen = [...keys(first, 'match')];
      let next = links(first).next;
      let pages = 1;
      while (next) {
        assert.ok(next.startsWith(`${BASE}/Observation?`), next);
        const current = await page('Observation', new URL(next).search.slice(1));
        assert.equal(current.total, 8);
        assert.ok(links(current).previous);
        seen.push(...keys(current, 'match'));
        next = links(current).next;
        pages++;
      }
      assert.equal(pages, 3);
      assert.deepEqual(seen, (await store.search('Observation', 'patient=pat-1')).map((r) => `Observation/${r.id}`), 'every match once, in order');
    });

    it('defaults to 50 per page, caps _count at 200, and _count=0 gives the total only', async () => {
      for (let i = 0; i < 230; i++) await store.create({ resourceType: 'Basic', id: `b-${String(i).padStart(3, '0')}` });
      const first = await page('Basic', '');
      assert.equal(first.total, 230);
      assert.equal(first.entry!.length, 50);
      assert.ok((first.link as { relation: string; url: string }[]).some((l) => l.relation === 'next' && l.url.includes('_getpagesoffset=50')));
      assert.equal((await page('Basic', '_count=1000')).entry!.length, 200);
      const count = await page('Basic', '_count=0');
      assert.equal(count.total, 230);
      assert.deepEqual(count.entry, []);
      assert.ok(!(count.link as { relation: string }[]).some((l) => l.relation === 'next'));
      const last = await page('Basic', '_count=100&_getpagesoffset=200');
      assert.equal(last.entry!.length, 30);
      assert.ok(!(last.link as { relation: string }[]).some((l) => l.relation === 'next'));
    });
  });

  describe('capabilityStatement', () => {
    it('describes a SMART-on-FHIR R4 server with one entry per stored type', async () => {
      const cs = capabilityStatement('https://smart.example/fhir/', {
        authorize: 'https://smart.example/auth', token: 'https://smart.example/token', introspect: 'https://smart.example/introspect',
      }, await describeStore(store)) as any;
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
      assert.deepEqual(rest.resource.map((r: { type: string }) => r.type), await store.types());
      assert.equal(rest.interaction, undefined);
      for (const r of rest.resource) {
        assert.deepEqual(r.interaction, [{ code: 'read' }, { code: 'search-type' }, { code: 'create' }, { code: 'update' }]);
        assert.ok(r.searchParam.some((p: { name: string }) => p.name === '_id'));
      }
      const obs = rest.resource.find((r: { type: string }) => r.type === 'Observation');
      assert.deepEqual(obs.searchParam.find((p: { name: string }) => p.name === 'patient'), { name: 'patient', type: 'reference' });
      assert.deepEqual(obs.searchParam.find((p: { name: string }) => p.name === 'category'), { name: 'category', type: 'token' });
    });

    it('lists all six oauth URIs when given and follows the store it is given', async () => {
      const uris = { authorize: 'a:1', token: 'a:2', revoke: 'a:3', introspect: 'a:4', register: 'a:5', manage: 'a:6' };
      await store.create({ resourceType: 'Basic', id: 'b' });
      const cs = capabilityStatement('https://x.example/fhir', uris, await describeStore(store)) as any;
      assert.deepEqual(cs.rest[0].security.extension[0].extension.map((e: { url: string }) => e.url),
        ['authorize', 'token', 'revoke', 'introspect', 'register', 'manage']);
      assert.ok(cs.rest[0].resource.some((r: { type: string }) => r.type === 'Basic'));
    });

    it('has no security element without OAuth URIs, and lists the interactions it is given', async () => {
      const cs = capabilityStatement('http://127.0.0.1/fhir', undefined, await describeStore(store), {
        interactions: ['read', 'vread'], systemInteractions: ['batch'],
      }) as any;
      assert.equal(cs.rest[0].security, undefined);
      assert.deepEqual(cs.rest[0].resource[0].interaction, [{ code: 'read' }, { code: 'vread' }]);
      assert.deepEqual(cs.rest[0].interaction, [{ code: 'batch' }]);
    });
  });

  describe('searchBundle / operationOutcome', () => {
    it('builds a searchset Bundle (one page, with includes, when told)', async () => {
      const matches = await store.search('Encounter', 'patient=pat-1');
      const b = searchBundle('https://x.example/fhir/', 'Encounter', matches, 'https://x.example/fhir/Encounter?patient=pat-1') as any;
      assert.equal(b.resourceType, 'Bundle');
      assert.equal(b.type, 'searchset');
      assert.equal(b.total, 2);
      assert.deepEqual(b.link, [{ relation: 'self', url: 'https://x.example/fhir/Encounter?patient=pat-1' }]);
      assert.deepEqual(b.entry.map((e: { fullUrl: string }) => e.fullUrl), ['https://x.example/fhir/Encounter/enc-1a', 'https://x.example/fhir/Encounter/enc-1b']);
      assert.ok(b.entry.every((e: { search: { mode: string }; resource: FhirResource }) => e.search.mode === 'match' && e.resource.resourceType === 'Encounter'));
      const paged = searchBundle('https://x.example/fhir', 'Encounter', matches.slice(0, 1), 'self', {
        total: 2, next: 'n', included: [(await store.read('Patient', 'pat-1'))!],
      }) as any;
      assert.equal(paged.total, 2);
      assert.deepEqual(paged.link, [{ relation: 'self', url: 'self' }, { relation: 'next', url: 'n' }]);
      assert.deepEqual(paged.entry.map((e: { search: { mode: string } }) => e.search.mode), ['match', 'include']);
      const empty = searchBundle('https://x.example/fhir', 'Encounter', [], 'self') as any;
      assert.equal(empty.total, 0);
      assert.deepEqual(empty.entry, []);
    });

    it('builds an OperationOutcome', async () => {
      assert.deepEqual(operationOutcome('error', 'not-found', 'Patient/x is not known'), {
        resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found', diagnostics: 'Patient/x is not known' }],
      });
      assert.deepEqual(operationOutcome('information', 'informational'), {
        resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational' }],
      });
    });
  });
});

// Transitional: the synchronous in-memory store stays until app.ts, routes.ts, launcher.ts and
// cli.ts use a FhirStore; the semantics are tested above on the database store.
