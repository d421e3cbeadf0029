import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { isResourceScope, parseScopes } from '../../server/smart/scopes.ts';
import { admitted, viewsFor } from '../../server/resource-server/decide.ts';
import { PATIENT_COMPARTMENT_PATHS, patientsOf } from '../../server/fhir/compartment.ts';
import { checkWrite, filterHistoryBundle, filterResource, filterSearchBundle } from '../../server/resource-server/filter.ts';
import type { FhirBundle, FhirBundleEntry, FhirResource, Refusal, TokenContext } from '../../server/resource-server/types.ts';

const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const DEMO = (JSON.parse(readFileSync(new URL('../../server/fhir/demo-data.json', import.meta.url), 'utf8')) as FhirBundle)
  .entry!.map((e) => e.resource!);
const demo = (ref: string): FhirResource => {
  const found = DEMO.find((r) => `${r.resourceType}/${r.id}` === ref);
  assert.ok(found, ref);
  return structuredClone(found);
};

function tok(scopes: string, ctx: Partial<TokenContext> = {}): TokenContext {
  return { clientId: 'app', issuer: 'https://as.example', jti: 'j1', exp: 2e9, claims: {}, scopes: parseScopes(scopes).scopes.filter(isResourceScope), ...ctx };
}

const P1 = { patient: 'pat-1' };
const match = (ref: string): FhirBundleEntry => ({ fullUrl: `https://fhir.example/${ref}`, resource: demo(ref), search: { mode: 'match' } });
const include = (resource: string | FhirResource): FhirBundleEntry =>
  ({ resource: typeof resource === 'string' ? demo(resource) : resource, search: { mode: 'include' } });
const outcome: FhirBundleEntry = {
  resource: { resourceType: 'OperationOutcome', issue: [{ severity: 'warning', code: 'informational', diagnostics: 'paged' }] },
  search: { mode: 'outcome' },
};
const provenance = (id: string, ...targets: string[]): FhirResource =>
  ({ resourceType: 'Provenance', id, target: targets.map((reference) => ({ reference })), recorded: '2026-01-10T12:00:00Z', agent: [{ who: { reference: 'Practitioner/dr-smith' } }] });

const searchset = (entry: FhirBundleEntry[], total?: number): FhirBundle =>
  ({ resourceType: 'Bundle', type: 'searchset', ...(total !== undefined ? { total } : {}), link: [{ relation: 'self', url: 'https://fhir.example/Observation' }], entry });

const refs = (bundle: FhirBundle) => (bundle.entry ?? []).map((e) => `${e.search?.mode ?? '-'}:${e.resource?.resourceType}/${e.resource?.id ?? ''}`);

describe('resource-server/filter', () => {
  describe('filterSearchBundle', () => {
    const mixed = () => searchset([
      match('Observation/obs-1a-hba1c'),
      match('Observation/obs-2a-hiv-vl'),
      match('Observation/obs-1a-weight'),
      include('Patient/pat-1'),
      include('Patient/pat-2'),
      include('Practitioner/dr-smith'),
      include(provenance('prov-1', 'Observation/obs-1a-hba1c')),
      include(provenance('prov-2', 'Observation/obs-2a-hiv-vl')),
      include(provenance('prov-3', 'Observation/obs-1a-hba1c', 'Observation/obs-2a-hiv-vl')),
      outcome,
    ], 3);

    it('keeps matches and includes the token may see, strips the rest and recounts total', () => {
      const input = mixed();
      const copy = structuredClone(input);
      const out = filterSearchBundle(input, tok('patient/*.rs', P1));
      assert.deepEqual(refs(out), [
        'match:Observation/obs-1a-hba1c', 'match:Observation/obs-1a-weight',
        'include:Patient/pat-1', 'include:Practitioner/dr-smith', 'include:Provenance/prov-1',
        'outcome:OperationOutcome/',
      ]);
      assert.equal(out.total, 2);
      assert.deepEqual(out.link, input.link);
      assert.deepEqual(input, copy, 'input not mutated');
      assert.notEqual(out, input);
    });

    it('checks includes with read views and matches with search views', () => {
      // search on Observation restricted to labs; read on everything of the patient
      const token = tok(`patient/Observation.s?category=${LAB} patient/Observation.r patient/Patient.r`, P1);
      const out = filterSearchBundle(mixed(), token);
      assert.deepEqual(refs(out), ['match:Observation/obs-1a-hba1c', 'include:Patient/pat-1', 'outcome:OperationOutcome/']);
      assert.equal(out.total, 1);
      const includedObservation = searchset([match('Patient/pat-1'), include('Observation/obs-1a-weight')]);
      assert.deepEqual(refs(filterSearchBundle(includedObservation, tok('patient/Patient.rs patient/Observation.s', P1))),
        ['match:Patient/pat-1'], 'search scope alone does not let an include through');
    });

    it('shows a revincluded Provenance only when it targets shown matches and Provenance may be read', () => {
      const bundle = searchset([match('Observation/obs-1a-hba1c'), include(provenance('prov-1', 'Observation/obs-1a-hba1c'))]);
      assert.deepEqual(refs(filterSearchBundle(bundle, tok('patient/Observation.rs', P1))), ['match:Observation/obs-1a-hba1c']);
      assert.equal(filterSearchBundle(bundle, tok('patient/Observation.rs patient/Provenance.r', P1)).entry!.length, 2);
      const odd = searchset([match('Observation/obs-1a-hba1c'), include({ ...provenance('prov-x', 'Observation/obs-1a-hba1c'), target: [{ reference: 'Observation/obs-1a-hba1c' }, { display: 'no reference' }] })]);
      assert.equal(filterSearchBundle(odd, tok('patient/*.rs', P1)).entry!.length, 1, 'every target must be a shown match');
    });

    it('treats entries without a mode as matches and drops entries without a resource or with an unknown mode', () => {
      const bundle = searchset([
        { resource: demo('Observation/obs-1a-hba1c') },
        { resource: demo('Observation/obs-2a-bp') },
        { search: { mode: 'match' } },
        { resource: demo('Observation/obs-1b-hr'), search: { mode: 'bogus' as 'match' } },
      ], 4);
      const out = filterSearchBundle(bundle, tok('patient/*.rs', P1));
      assert.deepEqual(refs(out), ['-:Observation/obs-1a-hba1c']);
      assert.equal(out.total, 1);
    });

    it('leaves total absent when the upstream sent none, and an empty Bundle empty', () => {
      const out = filterSearchBundle(searchset([match('Observation/obs-2a-bp')]), tok('patient/*.rs', P1));
      assert.equal('total' in out, false);
      assert.deepEqual(out.entry, []);
      const empty = filterSearchBundle({ resourceType: 'Bundle', type: 'searchset', total: 0 }, tok('patient/*.rs', P1));
      assert.deepEqual(empty, { resourceType: 'Bundle', type: 'searchset', total: 0 });
    });

    it('filters system-wide searches entry by entry', () => {
      const bundle = searchset([match('Observation/obs-1a-hba1c'), match('Condition/cond-2-oud'), match('Condition/cond-1-diabetes'), match('Organization/example-hospital')], 4);
      const out = filterSearchBundle(bundle, tok('user/*.rs', { fhirUser: 'Patient/pat-1' }));
      assert.deepEqual(refs(out), ['match:Observation/obs-1a-hba1c', 'match:Condition/cond-1-diabetes', 'match:Organization/example-hospital']);
      assert.equal(filterSearchBundle(bundle, tok('system/*.rs')).total, 4);
    });

    it('never returns a match or include the token could not read on its own (property)', () => {
      const scopes = fc.constantFrom('patient/*.rs', 'patient/Observation.rs', `patient/Observation.rs?category=${LAB}`, 'patient/Patient.r', 'user/*.rs', 'system/Observation.s');
      const entry = fc.record({ resource: fc.constantFrom(...DEMO), mode: fc.constantFrom('match', 'include', undefined) });
      fc.assert(fc.property(fc.array(scopes, { maxLength: 3 }), fc.constantFrom('pat-1', 'pat-2', 'pat-3'), fc.array(entry, { maxLength: 12 }), (granted, patient, entries) => {
        const token = tok(granted.join(' '), { patient, fhirUser: `Patient/${patient}` });
        const bundle = searchset(entries.map(({ resource, mode }) => ({ resource, ...(mode ? { search: { mode } } : {}) })), entries.length);
        const out = filterSearchBundle(bundle, token);
        for (const e of out.entry ?? []) {
          const kind = e.search?.mode === 'include' ? 'read' : 'search-type';
          assert.ok(admitted(viewsFor(token, e.resource!.resourceType, kind), e.resource!));
        }
        assert.equal(out.total, (out.entry ?? []).filter((e) => e.search?.mode !== 'include').length);
      }), { numRuns: 300 });
    });
  });

  describe('filterResource', () => {
    it('returns the resource when admitted and undefined (⇒ 404) otherwise', () => {
      const token = tok(`patient/Observation.rs?category=${LAB} patient/Patient.r`, P1);
      const lab = demo('Observation/obs-1a-hba1c');
      assert.equal(filterResource(lab, token, 'read'), lab);
      assert.equal(filterResource(lab, token, 'vread'), lab);
      assert.equal(filterResource(demo('Observation/obs-1a-weight'), token, 'read'), undefined);
      assert.equal(filterResource(demo('Observation/obs-2a-hiv-vl'), token, 'read'), undefined);
      assert.equal(filterResource(demo('Patient/pat-2'), token, 'read'), undefined);
      assert.equal(filterResource(demo('Patient/pat-1'), tok('patient/Patient.s', P1), 'read'), undefined, 'search permission does not read');
    });
  });

  describe('filterHistoryBundle', () => {
    const version = (resource: FhirResource, v: string): FhirBundleEntry =>
      ({ fullUrl: `https://fhir.example/${resource.resourceType}/${resource.id}`, resource: { ...resource, meta: { versionId: v } }, request: { method: 'PUT', url: `${resource.resourceType}/${resource.id}` } });
    const moved = () => {
      const current = demo('Observation/obs-1a-hba1c');
      return { current, earlier: { ...current, subject: { reference: 'Patient/pat-2' } } };
    };
    const deleted: FhirBundleEntry = { fullUrl: 'https://fhir.example/Observation/obs-gone', request: { method: 'DELETE', url: 'Observation/obs-gone' }, response: { status: '204' } };

    it('checks every version on its own and drops deletions for bounded views', () => {
      const { current, earlier } = moved();
      const bundle: FhirBundle = { resourceType: 'Bundle', type: 'history', total: 3, entry: [version(current, '2'), version(earlier, '1'), deleted] };
      const copy = structuredClone(bundle);
      const out = filterHistoryBundle(bundle, tok('patient/Observation.rs', P1));
      assert.deepEqual(out.entry!.map((e) => e.resource?.meta?.versionId), ['2']);
      assert.equal(out.total, 1);
      assert.deepEqual(bundle, copy, 'input not mutated');
    });

    it('keeps deletions for an unbounded, unrestricted view of their type', () => {
      const { current, earlier } = moved();
      const bundle: FhirBundle = { resourceType: 'Bundle', type: 'history', entry: [version(current, '2'), version(earlier, '1'), deleted] };
      assert.equal(filterHistoryBundle(bundle, tok('system/Observation.r')).entry!.length, 3);
      assert.equal(filterHistoryBundle(bundle, tok(`system/Observation.r?category=${LAB}`)).entry!.length, 2);
      assert.equal(filterHistoryBundle(bundle, tok('system/Condition.r')).entry!.length, 0);
      assert.equal('total' in filterHistoryBundle(bundle, tok('system/Observation.r')), false);
    });

    it('uses the views of the history interaction made', () => {
      const { current } = moved();
      const bundle: FhirBundle = { resourceType: 'Bundle', type: 'history', entry: [version(current, '2')] };
      assert.equal(filterHistoryBundle(bundle, tok('patient/Observation.s', P1), 'history-instance').entry!.length, 0);
      assert.equal(filterHistoryBundle(bundle, tok('patient/Observation.s', P1), 'history-type').entry!.length, 1);
      assert.equal(filterHistoryBundle(bundle, tok('patient/*.s', P1), 'history-system').entry!.length, 1);
      assert.equal(filterHistoryBundle(bundle, tok('patient/Observation.r', P1), 'history-type').entry!.length, 0);
    });
  });

  describe('checkWrite', () => {
    const token = tok(`patient/Observation.cud?category=${LAB} patient/Condition.cud`, P1);
    const lab = (patient: string, extra: object = {}): FhirResource => ({ ...demo('Observation/obs-1a-hba1c'), subject: { reference: `Patient/${patient}` }, ...extra });
    const status = (r: Refusal | undefined) => r && [r.status, r.code];

    it('create: the new resource must be inside the create views (403 otherwise)', () => {
      assert.equal(checkWrite(token, 'create', lab('pat-1')), undefined);
      assert.deepEqual(status(checkWrite(token, 'create', lab('pat-2'))), [403, 'forbidden']);
      assert.match(checkWrite(token, 'create', lab('pat-2'))!.message, /outside the patients/);
      assert.deepEqual(status(checkWrite(token, 'create', demo('Observation/obs-1a-weight'))), [403, 'forbidden'], 'outside the restriction');
      assert.deepEqual(status(checkWrite(token, 'create', { resourceType: 'Observation', status: 'final' })), [403, 'forbidden'], 'no subject');
      assert.deepEqual(status(checkWrite(tok('patient/Observation.rs', P1), 'create', lab('pat-1'))), [403, 'forbidden']);
      assert.deepEqual(status(checkWrite(token, 'create', undefined)), [400, 'invalid']);
    });

    it('update: a hidden current version is 404, a new version outside the views 403', () => {
      assert.equal(checkWrite(token, 'update', lab('pat-1'), lab('pat-1')), undefined);
      assert.deepEqual(status(checkWrite(token, 'update', lab('pat-1'), demo('Observation/obs-2a-hiv-vl'))), [404, 'not-found']);
      assert.deepEqual(status(checkWrite(token, 'update', lab('pat-1'), demo('Observation/obs-1a-weight'))), [404, 'not-found'], 'current version outside the restriction');
      assert.deepEqual(status(checkWrite(token, 'update', lab('pat-2'), lab('pat-1'))), [403, 'forbidden'], 'moving it out');
      assert.deepEqual(status(checkWrite(token, 'update', demo('Observation/obs-2a-hiv-vl'), demo('Observation/obs-2a-hiv-vl'))), [404, 'not-found'], '404 before 403');
    });

    it('update without a current version (update as create) is 404 unless a view is unbounded and unrestricted and the policy hides no id', () => {
      assert.deepEqual(status(checkWrite(token, 'update', lab('pat-1', { id: 'brand-new' }))), [404, 'not-found']);
      assert.equal(checkWrite(tok('system/Observation.u'), 'update', lab('pat-1', { id: 'brand-new' })), undefined);
      assert.deepEqual(status(checkWrite(tok('system/Observation.u'), 'update', lab('pat-1', { id: 'brand-new' }), undefined, false)), [404, 'not-found'], 'the policy may hide an id');
      assert.deepEqual(status(checkWrite(tok(`system/Observation.u?category=${LAB}`), 'update', lab('pat-1', { id: 'brand-new' }))), [404, 'not-found']);
    });

    it('patch and delete: a hidden current version is 404; a patch result outside the views 403', () => {
      assert.equal(checkWrite(token, 'delete', undefined, lab('pat-1')), undefined);
      assert.deepEqual(status(checkWrite(token, 'delete', undefined, demo('Observation/obs-2a-hiv-vl'))), [404, 'not-found']);
      assert.deepEqual(status(checkWrite(token, 'delete', undefined, demo('Condition/cond-2-oud'))), [404, 'not-found']);
      assert.equal(checkWrite(token, 'delete', undefined, demo('Condition/cond-1-depression')), undefined);
      assert.equal(checkWrite(token, 'patch', undefined, lab('pat-1')), undefined);
      assert.deepEqual(status(checkWrite(token, 'patch', undefined, demo('Observation/obs-2a-hiv-vl'))), [404, 'not-found']);
      assert.deepEqual(status(checkWrite(token, 'patch', lab('pat-2'), lab('pat-1'))), [403, 'forbidden']);
      assert.deepEqual(status(checkWrite(tok('patient/Observation.c', P1), 'delete', undefined, lab('pat-1'))), [404, 'not-found'], 'without d the resource is not found');
    });

    it('refuses a write that names another patient through any compartment parameter, in the new or the stored version (#14)', () => {
      const writer = tok('patient/*.cruds', P1);
      const other = lab('pat-2', { performer: [{ reference: 'Patient/pat-1' }] });
      assert.deepEqual(status(checkWrite(writer, 'create', other)), [403, 'forbidden'], 'subject pat-2, performer pat-1');
      const condition = { resourceType: 'Condition', subject: { reference: 'Patient/pat-2' }, asserter: { reference: 'Patient/pat-1' } };
      assert.deepEqual(status(checkWrite(writer, 'create', condition)), [403, 'forbidden'], 'subject pat-2, asserter pat-1');
      assert.deepEqual(status(checkWrite(writer, 'update', lab('pat-1'), other)), [403, 'forbidden'], 'the stored version names pat-2');
      assert.deepEqual(status(checkWrite(writer, 'delete', undefined, other)), [403, 'forbidden']);
      for (const subject of [{ reference: 'Patient?identifier=MRN-10002' }, { reference: 'urn:uuid:9b1c2d3e-0000-4000-8000-000000000000' }, { identifier: { value: 'MRN-10002' } }, { reference: '#p' }]) {
        assert.deepEqual(status(checkWrite(writer, 'create', lab('pat-1', { performer: [subject] }))), [403, 'forbidden'], JSON.stringify(subject));
      }
      assert.equal(checkWrite(writer, 'create', lab('pat-1', { performer: [{ reference: 'Practitioner/dr-smith' }, { display: 'the nurse' }] })), undefined);
      assert.equal(checkWrite(tok('system/*.cruds'), 'create', other), undefined, 'an unbounded token writes anywhere');
    });

    it('judges what a stored container carries by the write rule: an update, a patch or a delete of it changes what it carries', () => {
      const stored = { resourceType: 'Parameters', id: 'p', parameter: [{ name: 'result', resource: lab('pat-1') }] };
      const emptied = { resourceType: 'Parameters', id: 'p', parameter: [] };
      const readsObservations = tok('system/Parameters.cruds system/Observation.rs');
      assert.ok(filterResource(stored, readsObservations, 'read'), 'the token may read it');
      for (const kind of ['update', 'patch', 'delete'] as const) {
        const resource = kind === 'delete' ? undefined : emptied;
        assert.deepEqual(status(checkWrite(readsObservations, kind, resource, stored)), [403, 'forbidden'], kind);
        const permission = kind === 'delete' ? 'd' : 'u'; // SMART v2: a patch is an update
        assert.equal(checkWrite(tok(`system/Parameters.cruds system/Observation.${permission}`), kind, resource, stored), undefined, `${kind} with Observation.${permission}`);
      }
      const naming2 = { ...stored, parameter: [{ name: 'result', resource: lab('pat-1', { performer: [{ reference: 'Patient/pat-2' }] }) }] };
      assert.ok(filterResource(naming2, tok('patient/Parameters.cruds patient/Observation.cruds', P1), 'read'), 'in pat-1\'s compartment');
      assert.deepEqual(status(checkWrite(tok('patient/Parameters.cruds patient/Observation.cruds', P1), 'delete', undefined, naming2)), [403, 'forbidden'], 'not within pat-1 alone');
    });

    it('lets a bounded token write a type outside the compartment only with a scope naming it', () => {
      const medication = { resourceType: 'Medication', code: { text: 'aspirin' } };
      assert.deepEqual(status(checkWrite(tok('patient/*.cruds', P1), 'create', medication)), [403, 'forbidden']);
      assert.equal(checkWrite(tok('patient/Medication.c', P1), 'create', medication), undefined);
      assert.equal(checkWrite(tok('system/*.c'), 'create', medication), undefined);
    });

    it('property: a bounded write succeeds exactly when every compartment reference names a bound patient', () => {
      const types = Object.keys(PATIENT_COMPARTMENT_PATHS).filter((t) => t !== 'Patient' && t !== 'Consent'); // Consent: needs its own scope (below)
      const ref = fc.constantFrom('Patient/pat-1', 'Patient/pat-3', 'Patient/pat-2', 'Practitioner/dr-smith', 'Group/g1');
      const at = (path: string, value: unknown) => path.split('.').reduceRight<unknown>((inner, step) => ({ [step]: inner }), value);
      const merge = (a: any, b: any): any => {
        if (a === undefined) return b;
        if (typeof a !== 'object' || typeof b !== 'object') return b;
        const out = { ...a };
        for (const [k, v] of Object.entries(b)) out[k] = merge(a[k], v);
        return out;
      };
      const resource = fc.constantFrom(...types).chain((type) => fc.tuple(
        fc.constant(type),
        fc.array(fc.tuple(fc.constantFrom(...PATIENT_COMPARTMENT_PATHS[type]), fc.array(ref, { minLength: 1, maxLength: 3 })), { maxLength: 4 }),
      )).map(([type, assignments]) => {
        let r: any = { resourceType: type };
        const seen = new Set<string>();
        for (const [path, refs] of assignments) {
          if (seen.has(path)) continue; // one value per path: a later one would overwrite
          seen.add(path);
          r = merge(r, at(path, refs.map((reference) => ({ reference }))));
        }
        return r as FhirResource;
      });
      const bound = ['pat-1', 'pat-3'];
      const writer = tok('user/*.cruds', { fhirUser: 'Practitioner/dr-x', userPatients: bound });
      fc.assert(fc.property(resource, (r) => {
        const patients = patientsOf(r);
        const expected = patients.length > 0 && patients.every((p) => bound.includes(p));
        assert.equal(checkWrite(writer, 'create', r) === undefined, expected, JSON.stringify(r));
        assert.equal(checkWrite(writer, 'delete', undefined, r) === undefined, expected, JSON.stringify(r));
      }), { numRuns: 500 });
    });
  });
});
