import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import {
  dateShiftDays, deidentifyBundle, deidentifyResource, identifiesPerson, OBSERVATION_VALUE, pseudonym, realId, type DeidPolicy,
} from '../../server/privacy/deidentify.ts';
import type { FhirBundle, FhirResource } from '../../server/resource-server/types.ts';

const DEMO = JSON.parse(readFileSync(new URL('../../server/fhir/demo-data.json', import.meta.url), 'utf8')) as FhirBundle;
const byId = (id: string) => structuredClone(DEMO.entry!.find((e) => e.resource?.id === id)!.resource!);
const KEY = 'test-key-0123456789abcdef';
const YEAR: DeidPolicy = { key: KEY, dates: 'truncate-year' };
const MONTH: DeidPolicy = { key: KEY, dates: 'truncate-month' };
const SHIFT: DeidPolicy = { key: KEY, dates: 'shift', shiftDays: 100 };

/** pat-1 and the resources of her compartment in the demo data. */
const pat1Resources = (): FhirResource[] =>
  DEMO.entry!.map((e) => e.resource!).filter((r) => r.id === 'pat-1' || JSON.stringify(r).includes('"Patient/pat-1"')).map((r) => structuredClone(r));
const ofType = (rs: FhirResource[], t: string) => rs.filter((r) => r.resourceType === t);

const IDENTIFYING = ['Amy', 'Shaw', 'MRN-10001', '+1-555-0101', '555-0101', 'amy.shaw@example.com', 'Meadow', 'Springfield', '01103',
  'Dr. Jane Smith', 'Example Hospital', 'pat-1', 'dr-smith', 'enc-1a', 'obs-1a-hba1c', 'Take 1 tablet'];

const deepFreeze = <T>(v: T): T => {
  if (v && typeof v === 'object') {
    Object.values(v).forEach(deepFreeze);
    Object.freeze(v);
  }
  return v;
};

const daysBetween = (a: string, b: string) => Math.round((Date.UTC(+b.slice(0, 4), +b.slice(5, 7) - 1, +b.slice(8, 10)) - Date.UTC(+a.slice(0, 4), +a.slice(5, 7) - 1, +a.slice(8, 10))) / 86_400_000);

describe('privacy/deidentify', () => {
  describe('pseudonym', () => {
    it('is stable, a valid FHIR id, depends on key and id, and only its key reads it back (#14)', () => {
      const p = pseudonym(KEY, 'pat-1');
      assert.equal(p, pseudonym(KEY, 'pat-1'));
      assert.match(p, /^[A-Za-z0-9\-.]{17,64}$/);
      assert.notEqual(p, pseudonym('another-key-0123456789', 'pat-1'));
      assert.notEqual(p, pseudonym(KEY, 'pat-2'));
      assert.ok(!p.includes('pat'));
      assert.equal(realId(KEY, p), 'pat-1');
      assert.equal(realId('another-key-0123456789', p), undefined, "another key's pseudonym");
      assert.equal(realId(KEY, 'pat-1'), undefined, 'a real id is no pseudonym');
      const flipped = `${p.slice(0, -1)}${p.endsWith('A') ? 'B' : 'A'}`;
      assert.equal(realId(KEY, flipped), undefined, 'a forged pseudonym');
    });

    it('property: distinct ids get distinct pseudonyms, each a FHIR id that reads back to its id', () => {
      fc.assert(fc.property(fc.stringMatching(/^[A-Za-z0-9\-.]{1,64}$/), fc.stringMatching(/^[A-Za-z0-9\-.]{1,64}$/), (a, b) => {
        const pa = pseudonym(KEY, a);
        assert.match(pa, /^[A-Za-z0-9\-.]{17,64}$/);
        assert.equal(pa === pseudonym(KEY, b), a === b);
        assert.equal(realId(KEY, pa), a.length <= 36 ? a : undefined, 'ids over 36 characters get a one-way pseudonym');
      }));
    });
  });

  describe('deidentifyResource on the demo Patient pat-1 and her compartment', () => {
    it('removes name, identifier, telecom, address details and reference displays from the Patient', () => {
      const out = deidentifyResource(byId('pat-1'), YEAR);
      for (const k of ['name', 'identifier', 'telecom', 'photo', 'contact', 'text']) assert.equal(out[k], undefined, k);
      assert.deepEqual(out.address, [{ use: 'home', state: 'MA', country: 'US' }]);
      assert.equal(out.gender, 'female');
      assert.equal(out.id, pseudonym(KEY, 'pat-1'));
      assert.deepEqual(out.generalPractitioner, [{ reference: `Practitioner/${pseudonym(KEY, 'dr-smith')}` }]);
    });

    it('leaves no identifying string or original id anywhere in her records', () => {
      const rs = pat1Resources();
      assert.ok(ofType(rs, 'Observation').length >= 5 && ofType(rs, 'Condition').length >= 3 && ofType(rs, 'Encounter').length >= 2);
      for (const policy of [YEAR, MONTH, SHIFT]) {
        const json = JSON.stringify(rs.map((r) => deidentifyResource(r, policy)));
        for (const s of IDENTIFYING) assert.ok(!json.includes(s), `${s} leaked under ${policy.dates}`);
        assert.ok(!json.includes('"div"') && !json.includes('"note"') && !json.includes('"display":"Dr.'));
      }
    });

    it('rewrites every subject and encounter reference to the pseudonym of the resource it names', () => {
      const rs = pat1Resources();
      const patient = deidentifyResource(rs.find((r) => r.resourceType === 'Patient')!, SHIFT);
      const encounters = new Set(ofType(rs, 'Encounter').map((r) => `Encounter/${deidentifyResource(r, SHIFT).id}`));
      for (const r of [...ofType(rs, 'Observation'), ...ofType(rs, 'Condition'), ...ofType(rs, 'Encounter')]) {
        const out = deidentifyResource(r, SHIFT);
        assert.deepEqual(out.subject, { reference: `Patient/${patient.id}` }, r.id);
        const enc = (out.encounter as { reference?: string } | undefined)?.reference;
        if (enc) assert.ok(encounters.has(enc), `${r.id}: ${enc}`);
      }
    });

    it('keeps coded content: Coding.display and CodeableConcept.text next to a coding', () => {
      const out = deidentifyResource(byId('obs-1a-hba1c'), YEAR);
      assert.deepEqual(out.code, byId('obs-1a-hba1c').code);
      assert.deepEqual(out.valueQuantity, byId('obs-1a-hba1c').valueQuantity);
      const med = deidentifyResource(byId('medreq-1-metformin'), YEAR);
      assert.equal((med.medicationCodeableConcept as { text: string }).text, 'Metformin ER 500 mg tablet');
      assert.equal(med.dosageInstruction, undefined, 'a dosage of free text only goes whole: never {}');
    });

    it('gives the same output on two calls and different pseudonyms under different keys', () => {
      for (const r of pat1Resources()) {
        assert.deepEqual(deidentifyResource(r, SHIFT), deidentifyResource(r, SHIFT));
        const other = deidentifyResource(r, { ...SHIFT, key: 'a-different-key-0123456789' });
        assert.notEqual(other.id, deidentifyResource(r, SHIFT).id);
      }
    });

    it('never mutates its input (deep-frozen resources, unchanged afterwards)', () => {
      for (const policy of [YEAR, MONTH, SHIFT]) {
        for (const r of pat1Resources()) {
          const before = structuredClone(r);
          deidentifyResource(deepFreeze(r), policy);
          assert.deepEqual(r, before);
        }
      }
      const bundle = deepFreeze(structuredClone(DEMO));
      deidentifyBundle(bundle, SHIFT);
      assert.deepEqual(bundle, DEMO);
    });
  });

  describe('labels', () => {
    it('adds v3-ObservationValue PSEUDED and keeps the existing labels', () => {
      const out = deidentifyResource(byId('cond-1-depression'), YEAR);
      assert.deepEqual(out.meta?.security, [...byId('cond-1-depression').meta!.security!, { system: OBSERVATION_VALUE, code: 'PSEUDED', display: 'pseudonymized' }]);
      assert.equal(out.meta?.versionId, '1');
      const bare = deidentifyResource({ resourceType: 'Basic', id: 'b' }, YEAR);
      assert.deepEqual(bare.meta?.security, [{ system: OBSERVATION_VALUE, code: 'PSEUDED', display: 'pseudonymized' }]);
    });

    it('does not add PSEUDED twice when de-identifying de-identified output', () => {
      const once = deidentifyResource(byId('obs-1-brca'), YEAR);
      const twice = deidentifyResource(once, YEAR);
      assert.equal(twice.meta?.security?.filter((c) => c.code === 'PSEUDED').length, 1);
      assert.equal(twice.meta?.security?.[0]?.code, 'V');
    });
  });

  describe('dates', () => {
    it('truncate-year: dates and dateTimes to the year, instants to the first instant of the year', () => {
      const pat = deidentifyResource(byId('pat-1'), YEAR);
      assert.equal(pat.birthDate, '1987');
      assert.equal(pat.meta?.lastUpdated, '2026-01-01T00:00:00Z');
      const obs = deidentifyResource(byId('obs-1a-hba1c'), YEAR);
      assert.equal(obs.effectiveDateTime, '2025');
      assert.equal(obs.issued, '2025-01-01T00:00:00Z');
      const enc = deidentifyResource(byId('enc-1a'), YEAR);
      assert.deepEqual(enc.period, { start: '2025', end: '2025' });
      const allergy = deidentifyResource(byId('allergy-1-penicillin'), YEAR);
      assert.equal(allergy.onsetDateTime, '2005');
      assert.equal(allergy.recordedDate, '2025');
    });

    it('truncate-month: to year-month, a year stays a year', () => {
      assert.equal(deidentifyResource(byId('pat-1'), MONTH).birthDate, '1987-02');
      const cond = deidentifyResource(byId('cond-1b-bronchitis'), MONTH);
      assert.deepEqual([cond.onsetDateTime, cond.abatementDateTime, cond.recordedDate], ['2026-01', '2026-02', '2026-01']);
      assert.equal(deidentifyResource(byId('obs-1b-hr'), MONTH).meta?.lastUpdated, '2026-01-01T00:00:00Z');
      assert.equal(deidentifyResource(byId('allergy-1-penicillin'), MONTH).onsetDateTime, '2005');
    });

    it('shift: one non-zero shift for every full date of a patient, within ±shiftDays, time and offset kept', () => {
      const shift = dateShiftDays(SHIFT, 'pat-1');
      assert.ok(shift !== 0 && Math.abs(shift) <= 100);
      const full = /^\d{4}-\d{2}-\d{2}/;
      let checked = 0;
      const compare = (a: unknown, b: unknown): void => {
        if (typeof a === 'string' && typeof b === 'string' && full.test(a) && /^\d{4}-\d{2}-\d{2}(T|$)/.test(a)) {
          assert.equal(daysBetween(a, b), shift, `${a} -> ${b}`);
          assert.equal(b.slice(10), a.slice(10), 'time of day and offset kept');
          assert.equal(b.length, a.length, 'precision kept');
          checked++;
        } else if (a && typeof a === 'object' && b && typeof b === 'object') {
          for (const k of Object.keys(a)) if (k in b) compare((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]);
        }
      };
      for (const r of pat1Resources()) compare(r, deidentifyResource(r, SHIFT));
      assert.ok(checked > 30, `only ${checked} dates compared`);
    });

    it('shift keeps year and year-month precision', () => {
      const shift = dateShiftDays(SHIFT, 'pat-1');
      const out = deidentifyResource({ resourceType: 'Condition', id: 'c', subject: { reference: 'Patient/pat-1' }, onsetDateTime: '2005', abatementDateTime: '2010-06', recordedDate: '2010-06-15' }, SHIFT);
      assert.match(out.onsetDateTime as string, /^\d{4}$/);
      assert.ok(Math.abs(Number(out.onsetDateTime) - 2005) <= 1);
      assert.match(out.abatementDateTime as string, /^\d{4}-\d{2}$/);
      assert.equal(out.abatementDateTime, (out.recordedDate as string).slice(0, 7), 'the 15th and its month move together');
      assert.equal(daysBetween('2010-06-15', out.recordedDate as string), shift);
    });

    it('shift differs between patients, stays in range and is never zero', () => {
      const shifts = Array.from({ length: 200 }, (_, i) => dateShiftDays({ key: KEY, dates: 'shift', shiftDays: 7 }, `p-${i}`));
      assert.ok(shifts.every((s) => s !== 0 && s >= -7 && s <= 7));
      assert.equal(new Set(shifts).size, 14);
      assert.notEqual(dateShiftDays(SHIFT, 'pat-1'), dateShiftDays({ ...SHIFT, key: 'a-different-key-0123456789' }, 'pat-1'));
    });

    it('leaves codes and versions that look like dates alone', () => {
      const out = deidentifyResource({ resourceType: 'Observation', id: 'o', code: { coding: [{ system: 'urn:x', code: '2024-01', version: '2023-03-01' }] }, valueInteger: 2005 }, YEAR);
      assert.deepEqual(out.code, { coding: [{ system: 'urn:x', code: '2024-01', version: '2023-03-01' }] });
      assert.equal(out.valueInteger, 2005);
    });
  });

  describe('references and free text', () => {
    it('rewrites relative, absolute and _history references, pseudonymises urn:uuid, keeps #contained, drops conditional ones', () => {
      const p = pseudonym(KEY, 'pat-1');
      const out = deidentifyResource({
        resourceType: 'Provenance', id: 'pv',
        target: [
          { reference: 'Patient/pat-1' }, { reference: 'https://example.org/fhir/Patient/pat-1' },
          { reference: 'Patient/pat-1/_history/3' }, { reference: 'https://example.org/fhir/Patient/pat-1/_history/3' },
          { reference: '#c1' }, { reference: 'Patient?identifier=MRN-10001' }, { reference: 'urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e' },
        ],
        contained: [{ resourceType: 'Patient', id: 'c1', name: [{ family: 'Shaw' }] }],
      }, YEAR);
      const refs = (out.target as { reference?: string }[]).map((t) => t.reference);
      assert.deepEqual(refs.slice(0, 5), [`Patient/${p}`, `https://example.org/fhir/Patient/${p}`, `Patient/${p}/_history/3`, `https://example.org/fhir/Patient/${p}/_history/3`, '#c1']);
      assert.equal(refs.length, 6, 'the conditional reference goes whole, not as {}');
      assert.match(refs[5]!, /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.notEqual(refs[5], 'urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e');
      assert.deepEqual(out.contained, [{ resourceType: 'Patient', id: 'c1' }]);
    });

    it('drops free text, narrative, extensions, primitive extensions, attachments and Location.position; keeps modifierExtension', () => {
      const out = deidentifyResource({
        resourceType: 'Observation', id: 'o', subject: { reference: 'Patient/pat-1', display: 'Amy Shaw' },
        text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Amy Shaw</div>' },
        note: [{ text: 'called Amy' }], valueString: 'Amy said hi', comment: 'x', description: 'y',
        extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName', valueString: 'Smith' }],
        modifierExtension: [{ url: 'urn:m', valueBoolean: true }],
        _status: { extension: [{ url: 'urn:e', valueString: 'Amy' }] },
        code: { text: 'free-text only' },
        interpretation: [{ coding: [{ system: 'urn:i', code: 'H', display: 'High' }], text: 'High' }],
        derivedFrom: [{ display: 'Amy record' }],
        presentedForm: [{ contentType: 'application/pdf', data: 'QW15', url: 'https://x/amy.pdf', title: 'Amy', language: 'en' }],
        position: { latitude: 42.1, longitude: -72.5 },
        status: 'final',
      }, YEAR);
      assert.deepEqual(out, {
        resourceType: 'Observation', id: pseudonym(KEY, 'o'), subject: { reference: `Patient/${pseudonym(KEY, 'pat-1')}` },
        modifierExtension: [{ url: 'urn:m', valueBoolean: true }],
        interpretation: [{ coding: [{ system: 'urn:i', code: 'H', display: 'High' }], text: 'High' }],
        presentedForm: [{ contentType: 'application/pdf', language: 'en' }],
        status: 'final',
        meta: { security: [{ system: OBSERVATION_VALUE, code: 'PSEUDED', display: 'pseudonymized' }] },
      });
    });

    it('refuses a weak key or a bad shift', () => {
      assert.throws(() => deidentifyResource(byId('pat-1'), { key: 'short', dates: 'truncate-year' }), /16/);
      assert.throws(() => deidentifyResource(byId('pat-1'), { key: KEY, dates: 'shift', shiftDays: 0 }), /shiftDays/);
      assert.throws(() => deidentifyBundle(DEMO, { key: KEY, dates: 'shift', shiftDays: 1.5 }), /shiftDays/);
    });
  });

  describe('deidentifyBundle', () => {
    it('de-identifies every entry, rewrites fullUrls consistently with ids and references, drops the links (real ids in their queries)', () => {
      const input: FhirBundle = { ...structuredClone(DEMO), link: [
        { relation: 'self', url: 'https://example.org/fhir/Observation?patient=pat-1&name=Shaw' },
        { relation: 'next', url: 'https://example.org/fhir/Observation?patient=Patient/pat-1,pat-2&_id=obs-1a-hba1c&category=laboratory&_getpagesoffset=1' },
        { relation: 'previous', url: 'https://example.org/fhir/Patient/pat-1/_history?_count=1' },
      ] };
      const out = deidentifyBundle(input, SHIFT);
      assert.equal(out.link, undefined, 'the guard seals its own');
      assert.equal(out.entry?.length, DEMO.entry?.length);
      const json = JSON.stringify(out);
      for (const s of [...IDENTIFYING, 'pat-2', 'pat-3', 'MRN-']) assert.ok(!json.includes(s), `${s} leaked`);
      const urls = new Set<string>();
      for (const e of out.entry!) {
        assert.equal(e.fullUrl, `https://example.org/fhir/${e.resource!.resourceType}/${e.resource!.id}`);
        assert.ok(e.resource!.meta?.security?.some((c) => c.code === 'PSEUDED'));
        urls.add(`${e.resource!.resourceType}/${e.resource!.id}`);
      }
      // every reference in the output resolves to an entry of the output
      const refs = [...json.matchAll(/"reference":"([^"]+)"/g)].map((m) => m[1]!);
      assert.ok(refs.length > 50);
      for (const r of refs) assert.ok(urls.has(r), r);
      assert.equal(out.id, DEMO.id);
      assert.deepEqual(out.meta?.security, DEMO.meta?.security);
    });

    it('rewrites history and transaction request/response urls and drops identifying queries', () => {
      const out = deidentifyBundle({
        resourceType: 'Bundle', type: 'history', identifier: { value: 'doc-1' },
        entry: [
          { fullUrl: 'urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e', request: { method: 'POST', url: 'Patient', ifNoneExist: 'identifier=MRN-10001' } },
          { request: { method: 'PUT', url: 'Patient/pat-1', ifMatch: 'W/"1"' }, response: { status: '200 OK', location: 'Patient/pat-1/_history/2', lastModified: '2026-01-05T10:00:00Z', etag: 'W/"2"' } },
          { request: { method: 'GET', url: 'Patient?identifier=MRN-10001' } },
          { request: { method: 'DELETE', url: 'weird/path/pat-1/x' } },
        ],
      }, YEAR);
      const p = pseudonym(KEY, 'pat-1');
      assert.equal(out.identifier, undefined);
      assert.match(out.entry![0]!.fullUrl!, /^urn:uuid:/);
      assert.deepEqual(out.entry![0]!.request, { method: 'POST', url: 'Patient' });
      assert.deepEqual(out.entry![1], { request: { method: 'PUT', url: `Patient/${p}`, ifMatch: 'W/"1"' }, response: { status: '200 OK', location: `Patient/${p}/_history/2`, etag: 'W/"2"', lastModified: '2026-01-01T00:00:00Z' } });
      assert.deepEqual(out.entry![2]!.request, { method: 'GET', url: 'Patient' });
      assert.equal(out.entry![3]!.request, undefined);
    });

    it('deidentifyResource on a Bundle de-identifies it as a Bundle', () => {
      assert.deepEqual(deidentifyResource(DEMO, MONTH), deidentifyBundle(DEMO, MONTH));
    });
  });

  describe('property: a planted name never survives', () => {
    const planted = fc.stringMatching(/^[A-Z][a-z]{5,12}$/).map((s) => `Zq${s}`);
    const policies = fc.constantFrom<DeidPolicy>(YEAR, MONTH, SHIFT);
    it('in name, telecom, note, text.div, reference display, extensions, address and identifier of random resources', () => {
      fc.assert(fc.property(
        planted, policies,
        fc.constantFrom('Patient', 'Observation', 'Condition', 'Encounter', 'Practitioner', 'RelatedPerson'),
        fc.stringMatching(/^[a-z0-9-]{1,20}$/),
        fc.dictionary(fc.stringMatching(/^[a-z][a-zA-Z]{0,10}$/), fc.oneof(fc.string(), fc.integer(), fc.boolean()), { maxKeys: 5 }),
        fc.boolean(),
        (name, policy, type, id, noise, nest) => {
          const resource: FhirResource = {
            ...noise,
            resourceType: type, id,
            name: [{ family: name, given: [name], text: `${name} Jr.` }],
            telecom: [{ system: 'email', value: `${name.toLowerCase()}@example.org` }, { system: 'phone', value: name }],
            note: [{ text: `seen with ${name}`, authorString: name }],
            text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${name}</div>` },
            subject: { reference: 'Patient/p1', display: name },
            address: [{ line: [`1 ${name} St`], city: name, text: name, postalCode: name, state: 'MA' }],
            identifier: [{ system: 'urn:x', value: name }],
            extension: [{ url: 'urn:x', valueString: name }],
            ...(nest && { contained: [{ resourceType: 'Patient', id: 'c', name: [{ family: name }], contact: [{ name: { text: name } }] }] }),
          };
          const out = deidentifyResource(resource, policy);
          const json = JSON.stringify(out);
          assert.ok(!json.includes(name) && !json.toLowerCase().includes(name.toLowerCase()), json);
          assert.equal(out.id, pseudonym(policy.key, id));
          assert.deepEqual(deidentifyBundle({ resourceType: 'Bundle', entry: [{ resource }] }, policy).entry![0]!.resource, out);
        },
      ), { numRuns: 300 });
    });

    it('property: no direct-identifier string and no real resource id of the demo data in any de-identified answer (#14)', () => {
      const resources = DEMO.entry!.map((e) => e.resource!);
      const strings = (value: unknown): string[] => (typeof value === 'string' ? [value] : value && typeof value === 'object' ? Object.values(value).flatMap(strings) : []);
      // Direct identifiers (HIPAA Safe Harbor kinds): names, identifiers, contact details, street, city and postal code, exact birth dates.
      const values = (list: unknown) => (Array.isArray(list) ? list : []).map((x) => x?.value);
      const contacts = (Array.isArray as (v: unknown) => v is Record<string, unknown>[]);
      const direct = [...new Set(resources.flatMap((r) => [
        ...strings(r.name), ...strings(values(r.identifier)), ...strings(values(r.telecom)), ...strings(r.birthDate),
        ...(contacts(r.contact) ? r.contact.flatMap((c) => [...strings(c.name), ...strings(values(c.telecom))]) : []),
        ...((r.address ?? []) as Record<string, unknown>[]).flatMap((a) => strings([a.line, a.text, a.city, a.postalCode])),
      ]))].filter((x) => x.length >= 4 && !['Test', 'Patient'].includes(x)); // pat-4 is "Test Patient": words any answer holds
      const ids = resources.map((r) => r.id!);
      const leaks = (json: string) => [...direct.filter((x) => json.includes(x)), ...ids.filter((id) => new RegExp(`(^|[^A-Za-z0-9.-])${id.replaceAll('.', '\\.')}($|[^A-Za-z0-9.-])`).test(json))];
      const base = 'https://example.org/fhir';
      fc.assert(fc.property(fc.subarray(resources, { minLength: 1 }), policies, fc.constantFrom(...ids), (picked, policy, searched) => {
        const bundle: FhirBundle = {
          resourceType: 'Bundle', type: 'searchset', total: picked.length,
          link: [{ relation: 'self', url: `${base}/Observation?patient=${searched}` }, { relation: 'next', url: `${base}/Observation?patient=Patient/${searched}&_getpagesoffset=10` }],
          entry: picked.map((r) => ({ fullUrl: `${base}/${r.resourceType}/${r.id}`, resource: structuredClone(r), search: { mode: 'match' as const } })),
        };
        assert.deepEqual(leaks(JSON.stringify(deidentifyBundle(bundle, policy))), []);
        for (const r of picked) assert.deepEqual(leaks(JSON.stringify(deidentifyResource(structuredClone(r), policy))), [], r.id);
      }), { numRuns: 200 });
    });
  });

  describe('identifiesPerson', () => {
    it('names the search parameters a de-identified search may not use', () => {
      for (const name of ['name', 'family:exact', 'identifier', 'telecom', 'email', 'phone', 'address-city', 'address', '_content']) {
        assert.ok(identifiesPerson(name), name);
      }
      for (const name of ['birthdate', 'gender', 'code', 'patient']) assert.ok(!identifiesPerson(name), `${name}: dates follow date-search.ts`);
    });
  });
});
