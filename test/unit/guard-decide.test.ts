import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { patientsOf } from '../../server/fhir/compartment.ts';
import { matchesSearch } from '../../server/fhir/search.ts';
import { isResourceScope, parseScopes } from '../../server/smart/scopes.ts';
import { admits, admitted, decide, mayLowerLabels, permissionOf, scopeTextFor, searchIsSafe, viewsFor, type ScopedKind } from '../../server/resource-server/decide.ts';
import { classify } from '../../server/resource-server/interaction.ts';
import { PRIVACY_OFFICER } from '../../server/hcs/codes.ts';
import type { FhirBundle, FhirInteraction, FhirResource, InteractionKind, TokenContext, View } from '../../server/resource-server/types.ts';

const OBS_CAT = 'http://terminology.hl7.org/CodeSystem/observation-category';
const LAB = `${OBS_CAT}|laboratory`;
const DEMO = (JSON.parse(readFileSync(new URL('../../server/fhir/demo-data.json', import.meta.url), 'utf8')) as FhirBundle)
  .entry!.map((e) => e.resource!);
const demo = (ref: string): FhirResource => {
  const found = DEMO.find((r) => `${r.resourceType}/${r.id}` === ref);
  assert.ok(found, ref);
  return found;
};

function tok(scopes: string, ctx: Partial<TokenContext> = {}): TokenContext {
  const parsed = parseScopes(scopes);
  assert.deepEqual(parsed.invalid, [], scopes);
  return { clientId: 'app', issuer: 'https://as.example', jti: 'j1', exp: 2e9, claims: {}, scopes: parsed.scopes.filter(isResourceScope), ...ctx };
}

function interactionOf(request: string, body?: FhirResource): FhirInteraction {
  const [method, target] = request.split(' ');
  const q = target.indexOf('?');
  const result = classify({
    method,
    path: q < 0 ? target : target.slice(0, q),
    query: new URLSearchParams(q < 0 ? '' : target.slice(q + 1)),
    ...(body ? { body } : {}),
  });
  assert.ok('kind' in result, `${request}: ${JSON.stringify(result)}`);
  return result;
}

const P1 = { patient: 'pat-1' };
const NONE = {};
const AMY = { fhirUser: 'Patient/pat-1' };
const JONES = { fhirUser: 'Practitioner/dr-jones', userPatients: ['pat-1', 'pat-2'] };
const SMITH = { fhirUser: 'Practitioner/dr-smith' };
const NOBODY = { fhirUser: 'Practitioner/dr-jones', userPatients: [] };
const newObs = (patient: string, category = 'laboratory'): FhirResource => ({
  resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${patient}` },
  category: [{ coding: [{ system: OBS_CAT, code: category }] }],
});

type Row = [scopes: string, ctx: Partial<TokenContext>, request: string, resource: string | FhirResource, expect: 'allow' | 'deny' | 'filter'];

// scope × interaction × compartment × restriction ⇒ allow (decided and the resource admitted),
// filter (decided, the resource hidden) or deny (refused before anything is fetched).
const TABLE: Row[] = [
  // patient/ scopes: the launch patient's compartment
  ['patient/Observation.rs', P1, 'GET Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'allow'],
  ['patient/Observation.rs', P1, 'GET Observation/obs-2a-hiv-vl', 'Observation/obs-2a-hiv-vl', 'filter'],
  ['patient/Observation.rs', P1, 'GET Observation', 'Observation/obs-1a-hba1c', 'allow'],
  ['patient/Observation.rs', P1, 'GET Observation?patient=pat-2', 'Observation/obs-2a-hiv-vl', 'filter'],
  ['patient/Observation.rs', P1, 'GET Observation/obs-1a-hba1c/_history/1', 'Observation/obs-1a-hba1c', 'allow'],
  ['patient/Observation.rs', P1, 'GET Observation/obs-1a-hba1c/_history', 'Observation/obs-1a-hba1c', 'allow'],
  ['patient/Observation.rs', P1, 'GET Observation/_history', 'Observation/obs-2a-bp', 'filter'],
  ['patient/Observation.rs', NONE, 'GET Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'deny'],
  ['patient/Observation.r', P1, 'GET Observation', 'Observation/obs-1a-hba1c', 'deny'],
  ['patient/Observation.s', P1, 'GET Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'deny'],
  ['patient/Observation.rs', P1, 'GET Condition/cond-1-diabetes', 'Condition/cond-1-diabetes', 'deny'],
  ['patient/*.rs', P1, 'GET Condition/cond-1-diabetes', 'Condition/cond-1-diabetes', 'allow'],
  ['patient/*.rs', P1, 'GET Condition/cond-2-oud', 'Condition/cond-2-oud', 'filter'],
  ['patient/*.rs', P1, 'GET Patient/pat-1', 'Patient/pat-1', 'allow'],
  ['patient/*.rs', P1, 'GET Patient/pat-2', 'Patient/pat-2', 'filter'],
  ['patient/*.rs', P1, 'GET RelatedPerson/rp-3-mother', 'RelatedPerson/rp-3-mother', 'filter'],
  ['patient/*.rs', P1, 'GET Practitioner/dr-smith', 'Practitioner/dr-smith', 'allow'],
  ['patient/*.rs', P1, 'GET Organization/example-hospital', 'Organization/example-hospital', 'allow'],
  ['patient/*.rs', P1, 'GET metadata', 'Patient/pat-2', 'allow'],
  ['patient/*.rs', P1, 'GET ', 'Observation/obs-1a-hba1c', 'allow'],
  ['patient/Observation.rs', P1, 'GET ', 'Observation/obs-1a-hba1c', 'deny'],
  // leak vectors: predicates over data the filter never sees
  ['patient/*.rs', P1, 'GET Patient?_has:Condition:subject:code=38341003', 'Patient/pat-1', 'deny'],
  ['patient/*.rs', P1, 'GET Observation?subject.name=Garcia', 'Observation/obs-1a-hba1c', 'deny'],
  ['patient/*.rs', P1, 'GET Observation?subject:Patient=pat-1', 'Observation/obs-1a-hba1c', 'deny'],
  ['system/*.rs', NONE, 'GET Patient?_has:Condition:subject:code=38341003', 'Patient/pat-2', 'allow'],
  // query-restricted scopes
  [`patient/Observation.rs?category=${LAB}`, P1, 'GET Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'allow'],
  [`patient/Observation.rs?category=${LAB}`, P1, 'GET Observation/obs-1a-weight', 'Observation/obs-1a-weight', 'filter'],
  [`patient/Observation.rs?category=${LAB}`, P1, 'GET Observation/obs-2a-hiv-vl', 'Observation/obs-2a-hiv-vl', 'filter'],
  [`patient/Observation.rs?category=${LAB}`, P1, 'GET Observation', 'Observation/obs-1b-glucose', 'allow'],
  [`patient/Observation.rs?category=${LAB}`, P1, 'GET Observation?category=vital-signs', 'Observation/obs-1b-hr', 'filter'],
  [`patient/Observation.rs?category=${LAB} patient/Observation.rs?category=${OBS_CAT}|vital-signs`, P1, 'GET Observation', 'Observation/obs-1b-hr', 'allow'],
  [`patient/Observation.rs?category=${LAB} patient/Observation.rs?category=${OBS_CAT}|vital-signs`, P1, 'GET Observation', 'Observation/obs-1a-smoking', 'filter'],
  [`system/Observation.rs?category=${LAB}`, NONE, 'GET Observation/obs-2a-hiv-vl', 'Observation/obs-2a-hiv-vl', 'allow'],
  [`system/Observation.rs?category=${LAB}`, NONE, 'GET Observation/obs-2a-bp', 'Observation/obs-2a-bp', 'filter'],
  ['patient/Observation.rs?code:in=http://example.org/vs', P1, 'GET Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'filter'],
  ['patient/Observation.rs?unknown=x', P1, 'GET Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'filter'],
  // user/ scopes
  ['user/*.rs', AMY, 'GET Patient/pat-1', 'Patient/pat-1', 'allow'],
  ['user/*.rs', AMY, 'GET Patient/pat-2', 'Patient/pat-2', 'filter'],
  ['user/*.rs', JONES, 'GET Observation/obs-2a-hiv-vl', 'Observation/obs-2a-hiv-vl', 'allow'],
  ['user/*.rs', JONES, 'GET Observation/obs-3a-hgb', 'Observation/obs-3a-hgb', 'filter'],
  ['user/*.rs', SMITH, 'GET Observation/obs-3a-hgb', 'Observation/obs-3a-hgb', 'allow'],
  ['user/*.rs', NOBODY, 'GET Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'filter'],
  ['user/*.rs', NOBODY, 'GET Practitioner/dr-smith', 'Practitioner/dr-smith', 'allow'],
  ['user/*.rs', { fhirUser: 'Patient/' }, 'GET Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'filter'],
  // system/ scopes; system-level interactions need `*`
  ['system/*.rs', NONE, 'GET Observation/obs-2a-hiv-vl', 'Observation/obs-2a-hiv-vl', 'allow'],
  ['system/*.rs', NONE, 'GET ', 'Observation/obs-3a-hgb', 'allow'],
  ['system/*.rs', NONE, 'GET _history', 'Observation/obs-3a-hgb', 'allow'],
  ['system/Observation.rs', NONE, 'GET ', 'Observation/obs-3a-hgb', 'deny'],
  ['system/Observation.rs', NONE, 'GET _history', 'Observation/obs-3a-hgb', 'deny'],
  // v1 scopes
  ['patient/Observation.read', P1, 'GET Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'allow'],
  ['patient/Observation.read', P1, 'GET Observation', 'Observation/obs-2a-bp', 'filter'],
  ['patient/Observation.read', P1, 'POST Observation', newObs('pat-1'), 'deny'],
  ['patient/Observation.write', P1, 'GET Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'deny'],
  ['patient/Observation.write', P1, 'POST Observation', newObs('pat-1'), 'allow'],
  ['patient/Observation.*', P1, 'DELETE Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'allow'],
  // writes: the new resource (create, update) or the current one (delete, patch)
  ['patient/Observation.c', P1, 'POST Observation', newObs('pat-1'), 'allow'],
  ['patient/Observation.c', P1, 'POST Observation', newObs('pat-2'), 'filter'],
  [`patient/Observation.c?category=${LAB}`, P1, 'POST Observation', newObs('pat-1', 'vital-signs'), 'filter'],
  ['patient/Observation.u', P1, 'PUT Observation/o1', { ...newObs('pat-1'), id: 'o1' }, 'allow'],
  ['patient/Observation.u', P1, 'PUT Observation/o1', { ...newObs('pat-2'), id: 'o1' }, 'filter'],
  ['patient/Observation.u', P1, 'PATCH Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'allow'],
  ['patient/Observation.rs', P1, 'PATCH Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'deny'],
  ['patient/*.d', P1, 'DELETE Observation/obs-2a-hiv-vl', 'Observation/obs-2a-hiv-vl', 'filter'],
  ['patient/*.rs', P1, 'DELETE Observation/obs-1a-hba1c', 'Observation/obs-1a-hba1c', 'deny'],
  ['system/*.rs', NONE, 'POST Observation', newObs('pat-1'), 'deny'],
];

function outcome([scopes, ctx, request, resource]: Row): Row[4] {
  const subject = typeof resource === 'string' ? demo(resource) : resource;
  const write = request.startsWith('POST') || request.startsWith('PUT');
  const decision = decide(tok(scopes, ctx), interactionOf(request, write ? subject : undefined));
  if (decision.effect === 'deny') return 'deny';
  return admitted(decision.views, subject) ? 'allow' : 'filter';
}

describe('resource-server/decide', () => {
  describe('decision table', () => {
    for (const row of TABLE) {
      const [scopes, ctx, request, resource, expected] = row;
      const who = Object.entries(ctx).map(([k, v]) => `${k}=${String(v)}`).join(',') || 'no context';
      const what = typeof resource === 'string' ? resource : `new ${resource.resourceType} of ${(resource.subject as { reference: string }).reference}`;
      it(`${scopes} [${who}] ${request.trim()} ${what} ⇒ ${expected}`, () => {
        assert.equal(outcome(row), expected);
      });
    }
  });

  describe('permissionOf and scopeTextFor', () => {
    it('maps interactions to SMART v2 permissions', () => {
      const expected: Record<InteractionKind, string | undefined> = {
        read: 'r', vread: 'r', 'history-instance': 'r',
        'search-type': 's', 'search-system': 's', 'history-type': 's', 'history-system': 's',
        create: 'c', update: 'u', patch: 'u', delete: 'd',
        capabilities: undefined, batch: undefined, transaction: undefined, operation: undefined,
      };
      for (const [kind, permission] of Object.entries(expected)) assert.equal(permissionOf(kind as InteractionKind), permission, kind);
      assert.equal(scopeTextFor('search-type', 'Observation'), 'Observation.s');
      assert.equal(scopeTextFor('history-system', '*'), '*.s');
    });
  });

  describe('viewsFor', () => {
    it('bounds patient/ scopes to the launch patient and gives nothing without one', () => {
      assert.deepEqual(viewsFor(tok('patient/Observation.rs', P1), 'Observation', 'read'), [{ patients: ['pat-1'], query: [] }]);
      assert.deepEqual(viewsFor(tok('patient/Observation.rs', { patient: 'Patient/pat-1' }), 'Observation', 'read'), [{ patients: ['pat-1'], query: [] }]);
      assert.deepEqual(viewsFor(tok('patient/Observation.rs'), 'Observation', 'read'), []);
      assert.deepEqual(viewsFor(tok('patient/Observation.rs', { patient: '' }), 'Observation', 'read'), []);
    });

    it('bounds user/ scopes to a patient user, to userPatients, or not at all', () => {
      assert.deepEqual(viewsFor(tok('user/*.rs', AMY), 'Condition', 'search-type'), [{ patients: ['pat-1'], query: [] }]);
      assert.deepEqual(viewsFor(tok('user/*.rs', { fhirUser: 'https://ehr.example/fhir/Patient/pat-3' }), 'Condition', 'read'), [{ patients: ['pat-3'], query: [] }]);
      assert.deepEqual(viewsFor(tok('user/*.rs', { ...AMY, userPatients: ['pat-2'] }), 'Condition', 'read'), [{ patients: ['pat-1'], query: [] }]);
      assert.deepEqual(viewsFor(tok('user/*.rs', JONES), 'Condition', 'read'), [{ patients: ['pat-1', 'pat-2'], query: [] }]);
      assert.deepEqual(viewsFor(tok('user/*.rs', { userPatients: ['Patient/pat-2'] }), 'Condition', 'read'), [{ patients: ['pat-2'], query: [] }]);
      assert.deepEqual(viewsFor(tok('user/*.rs', SMITH), 'Condition', 'read'), [{ query: [] }]);
      assert.deepEqual(viewsFor(tok('user/*.rs', { fhirUser: 'not a reference' }), 'Condition', 'read'), [{ patients: [], query: [] }]);
    });

    it('carries query restrictions, keeps distinct views and drops identical ones', () => {
      const token = tok(`patient/Observation.rs?category=${LAB} patient/Observation.read patient/*.rs system/Observation.r`, P1);
      assert.deepEqual(viewsFor(token, 'Observation', 'read'), [
        { patients: ['pat-1'], query: [['category', LAB]] },
        { patients: ['pat-1'], query: [] },
        { query: [] },
      ]);
      assert.deepEqual(viewsFor(token, 'Observation', 'search-type'), [
        { patients: ['pat-1'], query: [['category', LAB]] },
        { patients: ['pat-1'], query: [] },
      ]);
    });

    it('matches only `*` scopes for system-wide interactions, and gives unscoped kinds nothing', () => {
      const token = tok('system/Observation.rs system/*.s', {});
      assert.deepEqual(viewsFor(token, '*', 'search-system'), [{ query: [] }]);
      assert.deepEqual(viewsFor(tok('system/Observation.rs'), '*', 'search-system'), []);
      for (const kind of ['capabilities', 'operation', 'batch', 'transaction'] as const) assert.deepEqual(viewsFor(token, 'Observation', kind), []);
    });
  });

  describe('decide', () => {
    it('denies with insufficient_scope, naming the interaction and type', () => {
      const decision = decide(tok('patient/Observation.rs', P1), interactionOf('GET Condition'));
      assert.equal(decision.effect, 'deny');
      assert.ok(decision.effect === 'deny');
      assert.deepEqual([decision.refusal.status, decision.refusal.code, decision.refusal.bearerError], [403, 'forbidden', 'insufficient_scope']);
      assert.match(decision.refusal.message, /search-type on Condition/);
      assert.match(decision.refusal.message, /Condition\.s/);
    });

    it('lets a user who is not a patient read AuditEvents only as an auditor; a backend service and a patient user by their scopes', () => {
      const search = interactionOf('GET AuditEvent?patient=pat-1');
      const user = { sub: 'u1', ...SMITH };
      const refused = decide(tok('user/AuditEvent.rs', user), search);
      assert.ok(refused.effect === 'deny');
      assert.deepEqual([refused.refusal.status, refused.refusal.code, refused.refusal.message], [403, 'forbidden', 'reading the audit trail needs the auditor role']);
      assert.equal(decide(tok('user/AuditEvent.rs', { ...user, auditor: false }), interactionOf('GET AuditEvent/ev-1')).effect, 'deny');
      assert.equal(decide(tok('user/AuditEvent.rs', { ...user, auditor: true }), search).effect, 'allow');
      assert.equal(decide(tok('user/AuditEvent.rs', { sub: 'u2', ...AMY }), search).effect, 'allow', 'their own compartment');
      assert.equal(decide(tok('system/AuditEvent.rs', { sub: 'app' }), search).effect, 'allow', 'a backend service');
      assert.equal(decide(tok('system/*.rs', { sub: 'app' }), search).effect, 'deny', 'a backend service whose scopes name AuditEvent only by *');
      assert.deepEqual(viewsFor(tok('system/*.rs', { sub: 'app' }), 'AuditEvent', 'read'), [], 'nor as an included or carried resource');
      const unscoped = decide(tok('user/Observation.rs', user), search);
      assert.ok(unscoped.effect === 'deny');
      assert.equal(unscoped.refusal.bearerError, 'insufficient_scope', 'the scopes first');
      assert.deepEqual(viewsFor(tok('user/*.rs', user), 'AuditEvent', 'read'), [], 'nor as an include or in a system-level search');
      assert.deepEqual(viewsFor(tok('user/*.rs', { ...user, auditor: true }), 'AuditEvent', 'read'), [{ query: [] }]);
    });

    it('allows capabilities unbounded and batch/transaction with no views of their own', () => {
      assert.deepEqual(decide(tok(''), interactionOf('GET metadata')), { effect: 'allow', views: [{ query: [] }] });
      const batch = { kind: 'batch', params: new URLSearchParams() } as const;
      assert.deepEqual(decide(tok(''), batch), { effect: 'allow', views: [] });
      assert.deepEqual(decide(tok(''), { ...batch, kind: 'transaction' }), { effect: 'allow', views: [] });
    });

    it('refuses operations unless allowed, then decides them like a search of their type', () => {
      const token = tok('patient/*.rs', P1);
      const everything = interactionOf('GET Patient/pat-1/$everything');
      const refused = decide(token, everything);
      assert.ok(refused.effect === 'deny');
      assert.deepEqual([refused.refusal.status, refused.refusal.code, refused.refusal.bearerError], [403, 'forbidden', undefined]);
      assert.match(refused.refusal.message, /\$everything/);
      assert.deepEqual(decide(token, everything, { allowOperations: ['everything'] }), { effect: 'allow', views: [{ patients: ['pat-1'], query: [] }] });
      assert.equal(decide(token, everything, { allowOperations: ['$everything'] }).effect, 'allow');
      assert.equal(decide(tok('patient/Observation.rs', P1), everything, { allowOperations: ['everything'] }).effect, 'deny');
      assert.equal(decide(token, interactionOf('GET $export'), { allowOperations: ['everything'] }).effect, 'deny');
    });

    it('refuses an operation it does not know, even when listed: it cannot tell what it reads or writes', () => {
      const token = tok('system/*.cruds');
      for (const request of ['GET $export', 'GET Patient/$export', 'POST $graphql', 'POST $process-message', 'GET Patient/pat-1/$x']) {
        const interaction = interactionOf(request);
        const refused = decide(token, interaction, { allowOperations: [interaction.operation!] });
        assert.ok(refused.effect === 'deny', request);
        assert.deepEqual([refused.refusal.status, refused.refusal.code], [403, 'forbidden'], request);
        assert.match(refused.refusal.message, /does not know/, request);
      }
    });

    it('decides a writing operation like an update of its resource: u (v1 write), Consent only with a Consent scope', () => {
      const meta = { resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { tag: [{ system: 's', code: 'c' }] } }] } as FhirResource;
      const allow = { allowOperations: ['meta-add', 'meta-delete'] };
      for (const name of ['meta-add', 'meta-delete']) {
        const onObs = interactionOf(`POST Observation/obs-1a-hba1c/$${name}`, meta);
        for (const scopes of ['patient/*.rs', 'patient/Observation.read', 'patient/Observation.cd']) {
          const refused = decide(tok(scopes, P1), onObs, allow);
          assert.ok(refused.effect === 'deny', `${name} ${scopes}`);
          assert.equal(refused.refusal.bearerError, 'insufficient_scope');
          assert.match(refused.refusal.message, /Observation\.u/);
        }
        for (const scopes of ['patient/Observation.u', 'patient/Observation.write', 'patient/*.cruds']) {
          assert.deepEqual(decide(tok(scopes, P1), onObs, allow), { effect: 'allow', views: [{ patients: ['pat-1'], query: [] }] }, `${name} ${scopes}`);
        }
        const onConsent = interactionOf(`POST Consent/consent-1/$${name}`, meta);
        assert.equal(decide(tok('patient/*.cruds', P1), onConsent, allow).effect, 'deny', 'policy data needs a scope naming Consent');
        assert.equal(decide(tok('patient/Consent.u', { ...P1, fhirUser: 'Patient/pat-1' }), onConsent, allow).effect, 'allow');
      }
    });

    it('fails closed on an interaction without the type it needs', () => {
      assert.equal(decide(tok('system/*.cruds'), { kind: 'read', params: new URLSearchParams() }).effect, 'deny');
    });
  });

  describe('Consent writes (#14)', () => {
    const officer = { extensions: { ihe_iua: { subject_role: [PRIVACY_OFFICER] } } };
    const update = (token: TokenContext) => decide(token, { kind: 'update', type: 'Consent', id: 'c', params: new URLSearchParams() }).effect;
    const clinician = { fhirUser: 'Practitioner/dr-smith' };

    it('need a scope naming Consent: wildcards never cover them', () => {
      assert.equal(update(tok('user/*.cruds', clinician)), 'deny', 'dr.smith with user/*.cruds');
      assert.equal(update(tok('user/*.cruds', { ...clinician, claims: officer })), 'deny', 'even a privacy officer');
      assert.equal(update(tok('patient/*.cruds', { patient: 'pat-1' })), 'deny');
      assert.equal(update(tok('system/*.cruds')), 'deny');
      assert.equal(decide(tok('user/*.cruds', clinician), { kind: 'read', type: 'Consent', id: 'c', params: new URLSearchParams() }).effect, 'allow', 'reading is not writing');
    });

    it('at user level, only by a privacy officer or the patient themselves', () => {
      assert.equal(update(tok('user/Consent.cud', clinician)), 'deny');
      assert.equal(update(tok('user/Consent.cud', { ...clinician, claims: officer })), 'allow');
      assert.equal(update(tok('user/Consent.cud', { fhirUser: 'Patient/pat-1' })), 'allow');
      assert.deepEqual(viewsFor(tok('user/Consent.cud', { fhirUser: 'Patient/pat-1' }), 'Consent', 'update'), [{ patients: ['pat-1'], query: [] }]);
      assert.equal(update(tok('patient/Consent.cu', { patient: 'pat-1', fhirUser: 'Patient/pat-1' })), 'allow');
      assert.equal(update(tok('system/Consent.cud')), 'allow');
    });

    it('at patient level, or bound to patients, still only by the patient or a privacy officer: a clinician is not the patient', () => {
      assert.equal(update(tok('patient/Consent.cu', { ...clinician, patient: 'pat-1' })), 'deny', 'dr.smith in a launch of pat-1');
      assert.equal(update(tok('patient/Consent.cu', { patient: 'pat-1' })), 'deny', 'a token that names no user');
      assert.equal(update(tok('patient/Consent.cu', { fhirUser: 'Patient/pat-2', patient: 'pat-1' })), 'deny', 'another patient');
      assert.equal(update(tok('user/Consent.cud', { ...clinician, userPatients: ['pat-1', 'pat-2'] })), 'deny', 'a clinician with --patients');
      assert.equal(update(tok('patient/Consent.cu', { ...clinician, patient: 'pat-1', claims: officer })), 'allow', 'a privacy officer');
    });

    it('the same people may lower labels: a privacy officer, or a backend registered for system/Consent writes', () => {
      assert.ok(mayLowerLabels(tok('user/*.cruds', { ...clinician, claims: officer })));
      assert.ok(mayLowerLabels(tok('system/Consent.u system/*.cruds')));
      assert.ok(!mayLowerLabels(tok('system/*.cruds')));
      assert.ok(!mayLowerLabels(tok('user/Consent.cruds', clinician)));
      assert.ok(!mayLowerLabels(tok('patient/Consent.cruds', { patient: 'pat-1' })));
    });
  });

  describe('AuditEvent and Provenance writes', () => {
    const officer = { fhirUser: 'Practitioner/auditor', claims: { extensions: { ihe_iua: { subject_role: [PRIVACY_OFFICER] } } }, auditor: true };
    it('are refused to every token, whatever its scopes: the server writes them, append-only', () => {
      for (const type of ['AuditEvent', 'Provenance']) {
        for (const request of [`POST ${type}`, `PUT ${type}/x`, `PATCH ${type}/x`, `DELETE ${type}/x`]) {
          for (const token of [tok('system/*.cruds system/AuditEvent.cud system/Provenance.cud'), tok('user/*.cruds', officer), tok('patient/*.cruds', { ...P1, fhirUser: 'Patient/pat-1' })]) {
            const decision = decide(token, interactionOf(request, { resourceType: type, id: 'x' }));
            assert.ok(decision.effect === 'deny' && /written by the server only/.test(decision.refusal.message), `${type}: ${request}`);
          }
        }
        const metaAdd = decide(tok('system/*.cruds'), interactionOf(`POST ${type}/x/$meta-add`, { resourceType: 'Parameters' }), { allowOperations: ['meta-add'] });
        assert.equal(metaAdd.effect, 'deny', `${type}/$meta-add`);
      }
      assert.equal(decide(tok('system/*.rs'), interactionOf('GET Provenance/x')).effect, 'allow', 'reading is not writing');
    });
  });

  describe('searchIsSafe', () => {
    const bounded: View[] = [{ patients: ['pat-1'], query: [] }];
    const restricted: View[] = [{ query: [['category', LAB]] }];
    const open: View[] = [{ query: [] }];
    const risky = [
      '_has:Condition:subject:code=x', '_has=x', 'subject.name=Garcia', 'subject:Patient.name=Garcia', 'subject:Patient=pat-2',
      'patient.birthdate=2000', '_filter=name eq x', '_query=special', '_list=list-1', '_summary=count', '_total=accurate', '_total=estimate',
      '_contained=true', '_contained=both',
    ];
    it('refuses predicates over other resources for bounded or restricted views', () => {
      for (const query of risky) {
        for (const views of [bounded, restricted, [...open, ...bounded]]) {
          const refusal = searchIsSafe(views, new URLSearchParams(query));
          assert.ok(refusal, `${query} with ${JSON.stringify(views)}`);
          assert.deepEqual([refusal.status, refusal.code], [403, 'forbidden']);
        }
        assert.equal(searchIsSafe(open, new URLSearchParams(query)), undefined, query);
      }
    });

    it('lets ordinary parameters through', () => {
      const query = 'patient=pat-2&category=laboratory&code:text=x&_security=R&_tag=x&_summary=true&_total=none&_include=Observation:subject&_revinclude=Provenance:target&date=ge2025&subject:identifier=x&_contained=false';
      assert.equal(searchIsSafe(bounded, new URLSearchParams(query)), undefined);
    });

    it('refuses :above and :below on a reference (or on a parameter R4 does not define) and :mdm on any, by the searched type', () => {
      const cases: [string | undefined, string, boolean][] = [
        ['Location', 'partof:below=Location/1', false], ['Location', 'partof:above=Location/1', false], ['Observation', 'subject:below=Patient/1', false],
        ['Observation', 'subject:BELOW=Patient/1', false], ['Observation', 'unknown:below=x', false], [undefined, 'patient:below=Patient/1', false],
        [undefined, 'location:below=x', false], ['Observation', 'code:mdm=x', false], ['Observation', 'subject:identifier:mdm=x', false],
        ['Observation', 'code:below=http://loinc.org|1', true], ['ValueSet', 'url:below=http://x', true], ['Observation', '_profile:above=http://x', true],
        ['Observation', 'value-quantity:below=5', true], [undefined, '_lastUpdated:below=2025', true], ['Observation', 'subject:identifier=x', true],
      ];
      for (const [type, query, safe] of cases) assert.equal(searchIsSafe(bounded, new URLSearchParams(query), type) === undefined, safe, `${type} ${query}`);
    });
  });

  describe('admits', () => {
    it('binds compartment types to the patients, Patient to itself, and lets other types pass', () => {
      const view: View = { patients: ['pat-1'], query: [] };
      assert.equal(admits(view, demo('Observation/obs-1a-hba1c')), true);
      assert.equal(admits(view, demo('AllergyIntolerance/allergy-1-penicillin')), true);
      assert.equal(admits(view, demo('Immunization/imm-2-flu')), false);
      assert.equal(admits(view, demo('Patient/pat-1')), true);
      assert.equal(admits(view, { resourceType: 'Patient', id: 'pat-9', link: [{ other: { reference: 'Patient/pat-1' }, type: 'seealso' }] }), false);
      assert.equal(admits(view, demo('Practitioner/dr-jones')), true);
      assert.equal(admits(view, { resourceType: 'Medication', id: 'm' }), true);
      assert.equal(admits(view, { resourceType: 'Observation', id: 'orphan' }), false);
      assert.equal(admits({ patients: [], query: [] }, demo('Observation/obs-1a-hba1c')), false);
      assert.equal(admits({ query: [] }, demo('Observation/obs-2a-hiv-vl')), true);
    });

    it('holds a Bundle to the patients of its entries', () => {
      const view: View = { patients: ['pat-1'], query: [] };
      const bundle = (...refs: string[]): FhirResource => ({ resourceType: 'Bundle', type: 'collection', entry: refs.map((r) => ({ resource: demo(r) })) });
      assert.equal(admits(view, bundle('Observation/obs-1a-hba1c', 'Practitioner/dr-smith')), true);
      assert.equal(admits(view, bundle('Observation/obs-1a-hba1c', 'Observation/obs-2a-hiv-vl')), false);
      assert.equal(admits(view, { resourceType: 'Bundle', type: 'document', entry: [{ resource: bundle('Patient/pat-2') }] }), false);
    });

    it('holds a Binary to the patients of its securityContext, and hides one without a context from bounded views', () => {
      const view: View = { patients: ['pat-1'], query: [] };
      const binary = (reference?: string): FhirResource => ({ resourceType: 'Binary', id: 'b', contentType: 'text/plain', data: 'aGk=', ...(reference && { securityContext: { reference } }) });
      const doc = (id: string, patient: string): FhirResource => ({ resourceType: 'DocumentReference', id, status: 'current', subject: { reference: `Patient/${patient}` }, content: [] });
      assert.equal(admits(view, binary('Patient/pat-1')), true);
      assert.equal(admits(view, binary('Patient/pat-2')), false);
      assert.equal(admits(view, binary()), false, 'no context: could be anybody\'s');
      assert.equal(admits(view, binary('DocumentReference/d1')), false, 'a context the caller did not read');
      assert.equal(admits(view, binary('DocumentReference/d1'), doc('d1', 'pat-1')), true);
      assert.equal(admits(view, binary('DocumentReference/d1'), doc('d1', 'pat-2')), false);
      assert.equal(admits(view, binary('DocumentReference/d1'), doc('d2', 'pat-1')), false, 'not the resource it names');
      assert.equal(admits(view, binary('Binary/b2'), { resourceType: 'Binary', id: 'b2', securityContext: { reference: 'Patient/pat-1' } }), false, 'no chains of Binaries');
      for (const securityContext of [{ reference: 42 }, { reference: '#local' }, { reference: 'not a reference' }, { display: 'Patient/pat-1' }, 'Patient/pat-1', null]) {
        assert.equal(admits(view, { ...binary(), securityContext } as FhirResource), false, `malformed context ${JSON.stringify(securityContext)}`);
      }
      assert.equal(admits({ query: [] }, binary()), true, 'an unbounded view sees every Binary');
      assert.equal(admits({ patients: ['pat-1'], query: [['_id', 'other']] }, binary('Patient/pat-1')), false, 'its own restrictions still apply');
    });

    it('fails closed on what it cannot evaluate', () => {
      assert.equal(admits({ query: [] }, {} as FhirResource), false);
      assert.equal(admits({ query: [] }, { resourceType: 42 } as unknown as FhirResource), false);
      assert.equal(admits({ query: [['date', 'not-a-date']] }, demo('Observation/obs-1a-hba1c')), false);
      assert.equal(admits({ query: [['code:text', 'HbA1c']] }, demo('Observation/obs-1a-hba1c')), false);
      assert.equal(admits({ query: [['_count', '1']] }, demo('Observation/obs-1a-hba1c')), false);
      assert.equal(admitted([], demo('Observation/obs-1a-hba1c')), false);
    });
  });

  describe('properties', () => {
    const SCOPED: ScopedKind[] = ['read', 'vread', 'history-instance', 'history-type', 'history-system', 'search-type', 'search-system', 'create', 'update', 'patch', 'delete'];
    const SYSTEM_WIDE = new Set<ScopedKind>(['search-system', 'history-system']);
    const TYPES = ['Observation', 'Condition', 'Patient', 'Encounter', 'Practitioner', 'MedicationRequest', '*'];
    const CATEGORIES = ['laboratory', 'vital-signs', 'social-history', 'survey'].map((c) => `${OBS_CAT}|${c}`);
    const PATIENTS = ['pat-1', 'pat-2', 'pat-3'];

    const perms = fc.subarray(['c', 'r', 'u', 'd', 's'], { minLength: 1 }).map((p) => p.join(''));
    const restriction = fc.option(fc.oneof(
      fc.constantFrom(...CATEGORIES).map((v) => `category=${v}`),
      fc.constantFrom('status=final', 'status=active', 'patient=pat-2', 'code=http://loinc.org|4548-4', 'gender=female'),
    ), { nil: undefined });
    const scopeText = fc.record({ level: fc.constantFrom('patient', 'user', 'system'), type: fc.constantFrom(...TYPES), perms, restriction })
      .map(({ level, type, perms: p, restriction: r }) => `${level}/${type}.${p}${r ? `?${r}` : ''}`);
    const context = fc.record({
      patient: fc.option(fc.constantFrom(...PATIENTS), { nil: undefined }),
      fhirUser: fc.option(fc.constantFrom('Patient/pat-1', 'Patient/pat-3', 'Practitioner/dr-jones'), { nil: undefined }),
      userPatients: fc.option(fc.subarray(PATIENTS), { nil: undefined }),
    }, { requiredKeys: [] });
    const resource = fc.constantFrom(...DEMO);
    const kind = fc.constantFrom(...SCOPED);

    it('(1) never denies when a matching unbounded, unrestricted scope is granted', () => {
      fc.assert(fc.property(fc.array(scopeText, { maxLength: 4 }), context, resource, kind, fc.boolean(), fc.boolean(), (scopes, ctx, r, k, viaUser, wildcard) => {
        // Consent writes need a Consent scope and, at user level, a privacy officer; AuditEvent and Provenance
        // are written by the server only (both tested on their own).
        fc.pre(!(['Consent', 'AuditEvent', 'Provenance'].includes(r.resourceType) && ['create', 'update', 'patch', 'delete'].includes(k)));
        const type = SYSTEM_WIDE.has(k) || wildcard ? '*' : r.resourceType;
        // system/ is unbounded; so is user/ for a user who is not a patient and has no userPatients list.
        const grant = `${viaUser ? 'user' : 'system'}/${type}.${permissionOf(k)}`;
        const token = tok([...scopes, grant].join(' '), viaUser ? { ...ctx, fhirUser: 'Practitioner/dr-smith', userPatients: undefined } : ctx);
        const interaction: FhirInteraction = {
          kind: k, params: new URLSearchParams('category=laboratory'),
          ...(SYSTEM_WIDE.has(k) ? {} : { type: r.resourceType }), ...(k === 'create' || k === 'update' ? { resource: r } : {}),
        };
        const decision = decide(token, interaction);
        assert.equal(decision.effect, 'allow', `${[...scopes, grant].join(' ')} ${k}`);
        assert.ok(decision.effect === 'allow' && admitted(decision.views, r));
        assert.ok(admitted(viewsFor(token, r.resourceType, k), r));
      }), { numRuns: 300 });
    });

    it('(2) never admits a resource of another patient\'s compartment under patient-bound views', () => {
      const foreign = DEMO.filter((r) => patientsOf(r).length > 0);
      fc.assert(fc.property(fc.array(scopeText, { maxLength: 5 }), fc.constantFrom(...PATIENTS), fc.constantFrom(...foreign), kind, fc.nat(2),
        (scopes, patient, r, k, who) => {
          fc.pre(!patientsOf(r).includes(patient));
          // Only bounded levels: patient/ with a launch patient, user/ for a patient user or a clinician with a list.
          const bounded = scopes.filter((s) => !s.startsWith('system/'));
          const ctx: Partial<TokenContext>[] = [
            { patient, userPatients: [patient] },
            { fhirUser: `Patient/${patient}` },
            { patient, fhirUser: 'Practitioner/dr-jones', userPatients: [patient] },
          ];
          const token = tok(bounded.join(' '), ctx[who]);
          for (const view of viewsFor(token, r.resourceType, k)) assert.deepEqual(view.patients, [patient]);
          assert.equal(admitted(viewsFor(token, r.resourceType, k), r), false);
        }), { numRuns: 500 });
    });

    it('(3) treats v1 scopes like their v2 mapping', () => {
      const V1 = { read: 'rs', write: 'cud', '*': 'cruds' } as const;
      fc.assert(fc.property(fc.constantFrom('patient', 'user', 'system'), fc.constantFrom(...TYPES), fc.constantFrom('read', 'write', '*') as fc.Arbitrary<keyof typeof V1>,
        fc.array(scopeText, { maxLength: 2 }), context, resource, kind,
        (level, type, v1, others, ctx, r, k) => {
          const v1Token = tok([`${level}/${type}.${v1}`, ...others].join(' '), ctx);
          const v2Token = tok([`${level}/${type}.${V1[v1]}`, ...others].join(' '), ctx);
          const target = SYSTEM_WIDE.has(k) ? '*' : r.resourceType;
          assert.deepEqual(viewsFor(v1Token, target, k), viewsFor(v2Token, target, k));
          const interaction: FhirInteraction = { kind: k, params: new URLSearchParams(), ...(SYSTEM_WIDE.has(k) ? {} : { type: r.resourceType }) };
          assert.deepEqual(decide(v1Token, interaction), decide(v2Token, interaction));
        }), { numRuns: 300 });
    });

    it('(4) never lets a query-restricted view admit a resource that does not match its restriction', () => {
      const pair = fc.oneof(
        fc.constantFrom(...CATEGORIES).map((v) => ['category', v] as const),
        fc.constantFrom(['status', 'final'], ['status', 'active'], ['code', 'http://loinc.org|4548-4'], ['patient', 'pat-1'],
          ['subject', 'Patient/pat-2'], ['date', 'ge2026-02'], ['gender', 'female'], ['code:text', 'x'], ['bogus', 'y'], ['_count', '2']) as fc.Arbitrary<readonly [string, string]>,
      );
      fc.assert(fc.property(fc.array(pair, { minLength: 1, maxLength: 3 }), fc.option(fc.subarray(PATIENTS), { nil: undefined }), resource, (query, patients, r) => {
        const view: View = patients === undefined ? { query } : { patients, query };
        if (!admits(view, r)) return;
        assert.ok(query.every(([name]) => !name.includes(':') && name !== 'bogus' && name !== '_count'));
        assert.ok(matchesSearch(r, query));
        for (const single of query) assert.ok(matchesSearch(r, [single]), `${single.join('=')} on ${r.resourceType}/${r.id}`);
      }), { numRuns: 1000 });
    });
  });
});
