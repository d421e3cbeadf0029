// Pure rules behind a new user's first steps: default purposes, the purpose preselected for a patient,
// which patients the picker lists, and how repeated grants are merged.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { defaultUserPurposes, loadPolicy } from '../../server/hcs/policy.ts';
import { purposeChoice, purposeForPatient } from '../../server/hcs/purpose-choice.ts';
import { matchesSearch, pickablePatients } from '../../server/interactions/picker.ts';
import { mergeRepeatedGrants, type GrantSummary } from '../../server/oidc/grants.ts';
import type { PatientSummary } from '../../server/fhir/patient-directory.ts';

const policy = loadPolicy();
const ROLE = 'http://terminology.hl7.org/CodeSystem/practitioner-role';
const role = (code: string) => ({ system: ROLE, code });
const subject = (purposes: string[], extra: { breakGlass?: boolean } = {}) =>
  ({ roles: [], purposes, clearance: 'N', sensitivities: [], breakGlass: Boolean(extra.breakGlass), patientUser: false });

describe('default purposes of a new user', () => {
  for (const [who, kind, expected] of [
    ['a patient', { roles: [], patientUser: true, operations: false }, ['PATRQT']],
    ['an auditor or privacy officer', { roles: [], patientUser: false, operations: true }, ['HOPERAT']],
    ['a doctor', { roles: [role('doctor')], patientUser: false, operations: false }, ['TREAT', 'HPAYMT', 'HOPERAT']],
    ['a nurse', { roles: [role('nurse')], patientUser: false, operations: false }, ['TREAT', 'HOPERAT']],
    ['a researcher (TREAT is not theirs to assert)', { roles: [role('researcher')], patientUser: false, operations: false }, ['HRESCH']],
    ['a clinician without a role (refused: none)', { roles: [], patientUser: false, operations: false }, []],
  ] as const) {
    it(`gives ${who} ${expected.join(', ') || 'nothing'}`, () => {
      assert.deepEqual(defaultUserPurposes(policy, { ...kind, roles: [...kind.roles] }), expected);
    });
  }
  it('never gives an emergency purpose', () => {
    const emergencyRole = { role: `${ROLE}|er`, purposes: ['ETREAT', 'TREAT'] };
    const withEmergency = { ...policy, rolePurposes: [...policy.rolePurposes, emergencyRole] };
    assert.deepEqual(defaultUserPurposes(withEmergency, { roles: [role('er')], patientUser: false, operations: false }), ['TREAT']);
  });
});

describe('the purpose preselected for a patient', () => {
  const choice = (purposes: string[], extra: { breakGlass?: boolean } = {}) => purposeChoice({ policy, subject: subject(purposes, extra) });
  it('keeps the usual one for ordinary data, and picks a test purpose for test data', () => {
    const tester = choice(['HOPERAT', 'HTEST']);
    assert.deepEqual(purposeForPatient(tester, { test: false }), { preselected: 'HOPERAT', visible: true });
    assert.deepEqual(purposeForPatient(tester, { test: true }), { preselected: 'HTEST', visible: true });
  });
  it('says when no purpose shows the patient', () => {
    assert.equal(purposeForPatient(choice(['HOPERAT']), { test: true }).visible, false);
    assert.equal(purposeForPatient(choice(['HTEST']), { test: false }).visible, false);
  });
  it('always preselects an option that shows the patient when there is one', () => {
    const codes = ['HOPERAT', 'HTEST', 'PATRQT'];
    fc.assert(fc.property(fc.subarray(codes, { minLength: 1 }), fc.boolean(), (purposes, test) => {
      const c = choice(purposes);
      fc.pre(!c.error);
      const result = purposeForPatient(c, { test });
      if (result.visible) assert.equal(result.preselected === 'HTEST', test);
      assert.ok(result.preselected === undefined || c.options.includes(result.preselected));
    }));
  });
});

describe('the patients the picker lists', () => {
  const p = (id: string, name: string, test = false): PatientSummary => ({ id, name, gender: 'unknown', birthDate: 'unknown', test });
  const list = [p('pat-1', 'Amy V. Shaw'), p('pat-2', 'Daniel Garcia'), p('pat-4', 'Test Patient', true)];
  const ids = (rules: Parameters<typeof pickablePatients>[1]) => pickablePatients(list, rules).map((x) => x.id);
  it('hides test patients unless the user may open test data, and those the user may not open', () => {
    assert.deepEqual(ids({ mayOpen: () => true, mayOpenTestData: false }), ['pat-1', 'pat-2']);
    assert.deepEqual(ids({ mayOpen: () => true, mayOpenTestData: true }), ['pat-1', 'pat-2', 'pat-4']);
    assert.deepEqual(ids({ mayOpen: (id) => id !== 'pat-2', mayOpenTestData: false }), ['pat-1']);
  });
  it('searches by the start of name words, case-insensitively, or by id', () => {
    for (const [query, expected] of [['amy', ['pat-1']], ['SHAW', ['pat-1']], ['amy shaw', ['pat-1']], ['gar dan', ['pat-2']], ['pat-2', ['pat-2']], ['my', []], ['', ['pat-1', 'pat-2']]] as const) {
      assert.deepEqual(ids({ mayOpen: () => true, mayOpenTestData: false, query }), expected, query);
    }
  });
  it('matches every patient for a blank query', () => {
    fc.assert(fc.property(fc.string(), fc.stringMatching(/^\s*$/), (name, blank) => matchesSearch(p('x', name), blank)));
  });
});

describe('merging repeated grants', () => {
  const g = (grantId: string, clientId: string, patient: string | undefined, grantedAt: number, scope: string, expiresAt: number | null = grantedAt + 100): GrantSummary =>
    ({ grantId, clientId, clientName: clientId, scope, patient, grantedAt, expiresAt });
  it('merges grants of one app for one patient: every id, every scope, how many, first and last', () => {
    const merged = mergeRepeatedGrants([
      g('g3', 'chart', 'pat-1', 300, 'openid patient/*.rs'), g('g2', 'other', 'pat-1', 200, 'openid'),
      g('g1', 'chart', 'pat-1', 100, 'openid offline_access'), g('g0', 'chart', 'pat-2', 50, 'openid'),
    ]);
    assert.deepEqual(merged.map((m) => [m.clientId, m.patient, m.grantIds, m.count, m.firstGrantedAt, m.lastGrantedAt]), [
      ['chart', 'pat-1', ['g3', 'g1'], 2, 100, 300], ['other', 'pat-1', ['g2'], 1, 200, 200], ['chart', 'pat-2', ['g0'], 1, 50, 50],
    ]);
    assert.equal(merged[0].scope, 'openid patient/*.rs offline_access');
    assert.equal(merged[0].expiresAt, 400);
  });
  it('keeps "no end" when one of the merged grants has none', () => {
    assert.equal(mergeRepeatedGrants([g('a', 'c', undefined, 1, 'openid', 10), g('b', 'c', undefined, 2, 'openid', null)])[0].expiresAt, null);
  });
});
