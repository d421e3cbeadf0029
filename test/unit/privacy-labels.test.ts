import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import {
  ACT_CODE, ACT_REASON, CONFIDENTIALITY, CONFIDENTIALITY_SCALE, confidentialityRank, type ConfidentialityCode,
} from '../../server/hcs/codes.ts';
import { knownSensitivities } from '../../server/hcs/label-vocabulary.ts';
import { residualFor, type PcfResidual } from '../../server/hcs/token-claims.ts';
import {
  highWaterMark, loweredLabel, purposeAllows, residualForbids, withConfidentiality, resourceDate, resourceLabels, suppressedOutcome, testDataVisible, withHighWaterMark,
  type ResidualRule,
} from '../../server/privacy/labels.ts';
import type { FhirBundle, FhirResource } from '../../server/resource-server/types.ts';

const demo = JSON.parse(readFileSync(new URL('../../server/fhir/demo-data.json', import.meta.url), 'utf8')) as FhirBundle;
const byId = (id: string): FhirResource => {
  const found = demo.entry!.find((e) => e.resource?.id === id)?.resource;
  assert.ok(found, `demo resource ${id}`);
  return found;
};
const opts = { defaultConfidentiality: 'N' as const };
const depression = byId('cond-1-depression');
const brca = byId('obs-1-brca');
const hiv = byId('obs-2a-hiv-vl');
const oud = byId('cond-2-oud');
const testPatient = byId('pat-4');
const labelsOf = (r: FhirResource) => resourceLabels(r, opts);

const conf = (code: string) => ({ system: CONFIDENTIALITY, code });
const sens = (code: string) => ({ system: ACT_CODE, code });
const reason = (code: string) => ({ system: ACT_REASON, code });
const withSecurity = (security: { system: string; code: string }[], extra: Record<string, unknown> = {}): FhirResource =>
  ({ resourceType: 'Observation', id: 'x', meta: { security }, ...extra });
const forbid = (...securityLabel: { system: string; code: string }[]): PcfResidual => ({ type: 'forbid', securityLabel });
const permit = (...securityLabel: { system: string; code: string }[]): PcfResidual => ({ type: 'permit', securityLabel });

describe('privacy labels: resourceLabels', () => {
  it('reads the demo resources', () => {
    const d = labelsOf(depression);
    assert.equal(d.confidentiality, 'R');
    assert.deepEqual(d.sensitivities, ['PSY']);
    assert.equal(d.test, false);
    assert.deepEqual(d.purposes, []);
    assert.equal(d.reference, 'Condition/cond-1-depression');
    assert.equal(labelsOf(brca).confidentiality, 'V');
    assert.deepEqual(labelsOf(brca).sensitivities, []);
    assert.deepEqual([labelsOf(hiv).confidentiality, labelsOf(hiv).sensitivities], ['R', ['HIV']]);
    assert.deepEqual([labelsOf(oud).confidentiality, labelsOf(oud).sensitivities], ['N', ['SUD']]);
    const p = labelsOf(testPatient);
    assert.equal(p.test, true);
    assert.deepEqual(p.purposes, []);
    assert.equal(p.confidentiality, 'N');
  });

  it('applies the default confidentiality to unlabelled resources', () => {
    assert.equal(resourceLabels({ resourceType: 'Patient' }, opts).confidentiality, 'N');
    assert.equal(resourceLabels({ resourceType: 'Patient' }, { defaultConfidentiality: 'M' }).confidentiality, 'M');
    assert.equal(resourceLabels(oud, { defaultConfidentiality: 'R' }).confidentiality, 'R');
    // retired or unknown confidentiality codes do not count
    assert.equal(resourceLabels(withSecurity([conf('ETH')]), { defaultConfidentiality: 'L' }).confidentiality, 'L');
  });

  it('takes the highest confidentiality when several are present', () => {
    assert.equal(labelsOf(withSecurity([conf('L'), conf('V'), conf('N')])).confidentiality, 'V');
    assert.equal(labelsOf(withSecurity([conf('U')])).confidentiality, 'U');
  });

  it('separates HTEST from purpose restrictions and ignores other systems', () => {
    const l = labelsOf(withSecurity([reason('HTEST'), reason('HRESCH'), sens('HIV'), sens('HIV'), { system: 'urn:other', code: 'R' }]));
    assert.equal(l.test, true);
    assert.deepEqual(l.purposes, ['HRESCH']);
    assert.deepEqual(l.sensitivities, ['HIV']);
    assert.equal(l.confidentiality, 'N');
  });

  it('finds the data date in the documented order', () => {
    assert.equal(resourceDate(hiv), hiv.effectiveDateTime);
    assert.equal(resourceDate(depression), depression.recordedDate ?? depression.onsetDateTime);
    assert.equal(resourceDate({ resourceType: 'X', effectivePeriod: { start: '2001' }, recordedDate: '2002' }), '2001');
    assert.equal(resourceDate({ resourceType: 'X', onsetDateTime: '2003', authoredOn: '2004' }), '2003');
    assert.equal(resourceDate({ resourceType: 'X', period: { start: '2005' }, meta: { lastUpdated: '2006' } }), '2005');
    assert.equal(resourceDate({ resourceType: 'X', meta: { lastUpdated: '2006-01-01T00:00:00Z' } }), '2006-01-01T00:00:00Z');
    assert.equal(resourceDate({ resourceType: 'X' }), undefined);
  });

  it('does not mutate its input', () => {
    const before = structuredClone(depression);
    labelsOf(depression);
    assert.deepEqual(depression, before);
  });
});

describe('privacy labels: unknown sensitivities fail closed (#14)', () => {
  const sickle = withSecurity([sens('SICKLE')]);
  const custom = withSecurity([{ system: 'https://hospital.example/labels', code: 'VIP-WARD' }]);
  const harmless = withSecurity([{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'PSEUDED' }, sens('NORDSCLCD'), reason('TREAT')]);

  it('counts every label that is not confidentiality, purpose of use or harmless as a sensitivity', () => {
    assert.deepEqual(labelsOf(sickle).unknown, [`${ACT_CODE}|SICKLE`]);
    assert.deepEqual(labelsOf(custom).unknown, ['https://hospital.example/labels|VIP-WARD']);
    assert.deepEqual(labelsOf(harmless).unknown, []);
    assert.deepEqual(labelsOf(withSecurity([sens('ADOL')])).sensitivities, ['ADOL'], 'ADOL is in the policy file');
  });

  it('hides them from every token not cleared for all sensitivities, unless a permit names the code', () => {
    const jones = residualFor({ ceiling: 'N', sensitivities: [] });
    const smith = residualFor({ ceiling: 'R', sensitivities: ['HIV', 'PSY', 'SUD', 'ETH'] });
    const everything = residualFor({ ceiling: 'R', sensitivities: knownSensitivities() });
    for (const resource of [sickle, custom]) {
      assert.equal(residualForbids(jones, labelsOf(resource)), true);
      assert.equal(residualForbids(smith, labelsOf(resource)), true);
      assert.equal(residualForbids(everything, labelsOf(resource)), false, 'cleared for every sensitivity');
      assert.equal(residualForbids([], labelsOf(resource)), false, 'no residual: no restriction');
    }
    assert.equal(residualForbids([...smith, permit(sens('SICKLE'))], labelsOf(sickle)), false);
    assert.equal(residualForbids(jones, labelsOf(withSecurity([sens('ADOL')]))), true, 'a known code not granted');
    assert.equal(residualForbids(jones, labelsOf(harmless)), false);
  });
});

describe('privacy labels: labels only go up (#14)', () => {
  it('names what a new version lowers: a sensitivity, purpose or HTEST label left out, or a lower confidentiality', () => {
    const stripped = { ...hiv, meta: { security: [conf('R')] } };
    assert.equal(loweredLabel(hiv, stripped, opts), `${ACT_CODE}|HIV`);
    assert.equal(loweredLabel(hiv, { ...hiv, meta: { security: [sens('HIV')] } }, opts), 'the confidentiality R', 'unlabelled counts as N');
    assert.equal(loweredLabel(testPatient, { ...testPatient, meta: {} }, opts), `${ACT_REASON}|HTEST`);
    assert.equal(loweredLabel(withSecurity([sens('SICKLE')]), withSecurity([]), opts), `${ACT_CODE}|SICKLE`);
    assert.equal(loweredLabel(hiv, { ...hiv, meta: { security: [conf('V'), sens('HIV'), sens('PSY')] } }, opts), undefined, 'raising is fine');
    assert.equal(loweredLabel(withSecurity([sens('NORDSCLCD')]), withSecurity([]), opts), undefined, 'a harmless label may go');
    assert.equal(loweredLabel({ resourceType: 'Observation' }, withSecurity([conf('N')]), opts), undefined);
  });

  it('gives a resource without a confidentiality label the default, and leaves one with it alone', () => {
    assert.deepEqual(withConfidentiality({ resourceType: 'Observation' }, { defaultConfidentiality: 'M' }).meta!.security, [conf('M')]);
    assert.deepEqual(withConfidentiality(withSecurity([sens('HIV')]), opts).meta!.security, [sens('HIV'), conf('N')]);
    assert.equal(withConfidentiality(hiv, opts), hiv);
  });
});

describe('privacy labels: residualForbids', () => {
  it('matches confidentiality codes at their level', () => {
    const residual = [forbid(conf('R'), conf('V'))];
    assert.equal(residualForbids(residual, labelsOf(depression)), true);
    assert.equal(residualForbids(residual, labelsOf(brca)), true);
    assert.equal(residualForbids(residual, labelsOf(oud)), false);
    assert.equal(residualForbids([forbid(conf('V'))], labelsOf(depression)), false);
  });

  it('uses the residual a token carries (demo clearances)', () => {
    const nurse = residualFor({ ceiling: 'N', sensitivities: [] });
    assert.equal(residualForbids(nurse, labelsOf(depression)), true);
    assert.equal(residualForbids(nurse, labelsOf(oud)), true); // SUD not granted
    assert.equal(residualForbids(nurse, labelsOf(testPatient)), false);
    const psych = residualFor({ ceiling: 'R', sensitivities: ['PSY', 'SUD'] });
    assert.equal(residualForbids(psych, labelsOf(depression)), false);
    assert.equal(residualForbids(psych, labelsOf(oud)), false);
    assert.equal(residualForbids(psych, labelsOf(hiv)), true); // HIV not granted
    assert.equal(residualForbids(psych, labelsOf(brca)), true); // V above R
  });

  it('subsumes: forbid SUD catches OPIOIDUD, ETHUD and ETH; forbid SPI catches PSY; not the other way', () => {
    const sud = [forbid(sens('SUD'))];
    for (const code of ['SUD', 'OPIOIDUD', 'ETHUD', 'ETH']) assert.equal(residualForbids(sud, labelsOf(withSecurity([sens(code)]))), true, code);
    assert.equal(residualForbids([forbid(sens('ETH'))], labelsOf(oud)), true);
    assert.equal(residualForbids([forbid(sens('SPI'))], labelsOf(depression)), true);
    assert.equal(residualForbids([forbid(sens('SPI'))], labelsOf(withSecurity([sens('OPIOIDUD')]))), true);
    assert.equal(residualForbids([forbid(sens('OPIOIDUD'))], labelsOf(oud)), false);
    assert.equal(residualForbids([forbid(sens('PSY'))], labelsOf(withSecurity([sens('SPI')]))), false);
    assert.equal(residualForbids(sud, labelsOf(hiv)), false);
  });

  it('lets a matching permit override a matching forbid', () => {
    const residual = [forbid(conf('R'), conf('V')), permit(conf('R'))];
    assert.equal(residualForbids(residual, labelsOf(depression)), false);
    assert.equal(residualForbids(residual, labelsOf(brca)), true);
    assert.equal(residualForbids([forbid(sens('SUD')), permit(sens('OPIOIDUD'))], labelsOf(withSecurity([sens('OPIOIDUD')]))), false);
    assert.equal(residualForbids([forbid(sens('SUD')), permit(sens('HIV'))], labelsOf(oud)), true);
  });

  it('lets data flow when no rule matches', () => {
    assert.equal(residualForbids([], labelsOf(brca)), false);
    assert.equal(residualForbids([permit(conf('V'))], labelsOf(brca)), false);
    assert.equal(residualForbids([forbid(sens('HIV'))], labelsOf(depression)), false);
  });

  it('matches dataPeriod against the resource date (AND with labels)', () => {
    const r2004 = withSecurity([], { effectiveDateTime: '2004-06-01T10:00:00Z' });
    const r2005 = withSecurity([], { effectiveDateTime: '2005-01-01' });
    const lastDay = withSecurity([], { effectiveDateTime: '2004-12-31T23:30:00+00:00' });
    const rule: ResidualRule = { type: 'forbid', securityLabel: [], dataPeriod: { start: '2004-01-01', end: '2004-12-31' } };
    assert.equal(residualForbids([rule], labelsOf(r2004)), true);
    assert.equal(residualForbids([rule], labelsOf(lastDay)), true);
    assert.equal(residualForbids([rule], labelsOf(r2005)), false);
    assert.equal(residualForbids([rule], labelsOf({ resourceType: 'Patient', id: 'p' })), false, 'undated data: rule cannot match');
    assert.equal(residualForbids([{ type: 'forbid', securityLabel: [], dataPeriod: { start: '2005' } }], labelsOf(r2005)), true);
    const both: ResidualRule = { ...rule, securityLabel: [sens('HIV')] };
    assert.equal(residualForbids([both], labelsOf(r2004)), false);
    assert.equal(residualForbids([both], labelsOf(withSecurity([sens('HIV')], { effectiveDateTime: '2004-03-03' }))), true);
  });

  it('matches data[].reference as Type/id', () => {
    const rule: ResidualRule = { type: 'forbid', securityLabel: [], data: [{ meaning: 'instance', reference: { reference: 'Condition/cond-2-oud' } }] };
    assert.equal(residualForbids([rule], labelsOf(oud)), true);
    assert.equal(residualForbids([rule], labelsOf(depression)), false);
    const absolute: ResidualRule = { type: 'forbid', securityLabel: [], data: [{ reference: { reference: 'https://fhir.example/r4/Condition/cond-2-oud/_history/3' } }] };
    assert.equal(residualForbids([absolute], labelsOf(oud)), true);
    assert.equal(residualForbids([rule, { type: 'permit', securityLabel: [], data: [{ reference: 'Condition/cond-2-oud' }] }], labelsOf(oud)), false);
  });

  it('property: the residual for a ceiling forbids exactly the resources above it', () => {
    const code = fc.constantFrom(...CONFIDENTIALITY_SCALE);
    fc.assert(fc.property(code, code, fc.subarray(knownSensitivities()), fc.nat(), (ceiling, r, granted, pick) => {
      const residual = residualFor({ ceiling, sensitivities: granted });
      // the resource carries at most one granted sensitivity, so only its confidentiality can be forbidden
      const carried = granted.length ? [sens(granted[pick % granted.length])] : [];
      const labels = labelsOf(withSecurity([conf(r), ...carried]));
      return residualForbids(residual, labels) === confidentialityRank(r) > confidentialityRank(ceiling);
    }));
  });

  it('property: adding a permit rule never hides more', () => {
    const coding = fc.oneof(
      fc.constantFrom(...CONFIDENTIALITY_SCALE).map(conf),
      fc.constantFrom('SUD', 'ETH', 'OPIOIDUD', 'SPI', 'PSY', 'HIV', 'BH', 'MH').map(sens),
      fc.constantFrom('HTEST', 'HRESCH').map(reason),
    );
    const rule = fc.record({ type: fc.constantFrom('forbid' as const, 'permit' as const), securityLabel: fc.array(coding, { maxLength: 3 }) });
    const resource = fc.array(coding, { maxLength: 4 }).map((security) => withSecurity(security));
    fc.assert(fc.property(fc.array(rule, { maxLength: 4 }), fc.array(coding, { maxLength: 3 }), resource, (residual, extra, res) => {
      const labels = labelsOf(res);
      const after = residualForbids([...residual, { type: 'permit', securityLabel: extra }], labels);
      return !after || residualForbids(residual, labels);
    }));
  });
});

describe('privacy labels: HTEST and purpose of use', () => {
  it('shows HTEST data only to test tokens, and test tokens only HTEST data', () => {
    const test = labelsOf(testPatient);
    const prod = labelsOf(oud);
    assert.equal(testDataVisible(test, 'HTEST'), true);
    assert.equal(testDataVisible(test, 'TREAT'), false);
    assert.equal(testDataVisible(test, 'SYSDEV'), false, 'SYSDEV is a parent of HTEST, not is-a HTEST');
    assert.equal(testDataVisible(test, undefined), false);
    assert.equal(testDataVisible(prod, 'HTEST'), false);
    assert.equal(testDataVisible(prod, 'TREAT'), true);
    assert.equal(testDataVisible(prod, undefined), true);
  });

  it('restricts purpose-labelled resources along the is-a hierarchy', () => {
    const treatOnly = labelsOf(withSecurity([reason('TREAT')]));
    assert.equal(purposeAllows(treatOnly, 'TREAT'), true);
    assert.equal(purposeAllows(treatOnly, 'ETREAT'), true);
    assert.equal(purposeAllows(treatOnly, 'BTG'), true);
    assert.equal(purposeAllows(treatOnly, 'HPAYMT'), false);
    assert.equal(purposeAllows(treatOnly, undefined), false);
    const etreat = labelsOf(withSecurity([reason('ETREAT'), reason('HRESCH')]));
    assert.equal(purposeAllows(etreat, 'BTG'), true);
    assert.equal(purposeAllows(etreat, 'CLINTRCH'), true);
    assert.equal(purposeAllows(etreat, 'TREAT'), false, 'a parent is not is-a its child');
    assert.equal(purposeAllows(labelsOf(depression), undefined), true);
    assert.equal(purposeAllows(labelsOf(testPatient), 'TREAT'), true, 'HTEST is not a purpose restriction');
  });
});

describe('privacy labels: high water mark and break-the-glass', () => {
  it('computes the high water mark of the demo resources', () => {
    assert.equal(highWaterMark([oud, depression], opts), 'R');
    assert.equal(highWaterMark([oud, depression, brca], opts), 'V');
    assert.equal(highWaterMark([withSecurity([conf('L')])], opts), 'L');
    assert.equal(highWaterMark([withSecurity([conf('L')]), testPatient], opts), 'N');
    assert.equal(highWaterMark([], opts), 'N');
  });

  it('labels a copy of the Bundle, replacing confidentiality and keeping other codings', () => {
    const bundle: FhirBundle = {
      resourceType: 'Bundle', type: 'searchset', meta: { lastUpdated: '2026-01-01T00:00:00Z', security: [conf('U'), { system: 'urn:x', code: 'keep' }] },
      entry: [{ resource: oud }, { resource: hiv }, { resource: brca, search: { mode: 'outcome' } }],
    };
    const before = structuredClone(bundle);
    const out = withHighWaterMark(bundle, opts);
    assert.deepEqual(bundle, before, 'input untouched');
    assert.notEqual(out, bundle);
    assert.equal(out.meta?.lastUpdated, '2026-01-01T00:00:00Z');
    assert.deepEqual(out.meta?.security, [{ system: 'urn:x', code: 'keep' }, conf('R')]);
    assert.equal(out.entry, bundle.entry);
    // nothing privacy-revealing: only one coding added, and no sensitivity or obligation codes
    assert.ok(!out.meta!.security!.some((c) => c.system === ACT_CODE));
    assert.deepEqual(withHighWaterMark({ resourceType: 'Bundle' }, opts).meta?.security, [conf('N')]);
    const labelledDemo = withHighWaterMark(demo, opts);
    assert.equal(labelsOf(labelledDemo).confidentiality, 'V');
  });

  it('property: withHighWaterMark never lowers the bundle below any entry', () => {
    const code = fc.constantFrom(...CONFIDENTIALITY_SCALE);
    const resource = fc.array(code, { maxLength: 3 }).map((codes) => withSecurity(codes.map(conf)));
    fc.assert(fc.property(fc.array(resource, { maxLength: 6 }), fc.option(code, { nil: undefined }), code, (resources, existing, dflt) => {
      const options = { defaultConfidentiality: dflt as ConfidentialityCode };
      const bundle: FhirBundle = { resourceType: 'Bundle', meta: existing ? { security: [conf(existing)] } : {}, entry: resources.map((resource) => ({ resource })) };
      const out = withHighWaterMark(bundle, options);
      const marks = out.meta!.security!.filter((c) => c.system === CONFIDENTIALITY);
      if (marks.length !== 1) return false;
      const mark = resourceLabels(out, options).confidentiality;
      return resources.every((r) => confidentialityRank(mark) >= confidentialityRank(resourceLabels(r, options).confidentiality));
    }));
  });

  it('builds the R4 break-the-glass OperationOutcome', () => {
    const oo = suppressedOutcome() as { resourceType: string; issue: { severity: string; code: string; details: { coding: { system: string; code: string }[]; text: string } }[] };
    assert.equal(oo.resourceType, 'OperationOutcome');
    assert.equal(oo.issue.length, 1);
    assert.equal(oo.issue[0].severity, 'information');
    assert.equal(oo.issue[0].code, 'suppressed');
    assert.equal(oo.issue[0].details.coding[0].system, ACT_REASON);
    assert.equal(oo.issue[0].details.coding[0].code, 'ETREAT');
    assert.equal(oo.issue[0].details.text, 'Additional information may be available using the Break-The-Glass Protocol');
    assert.notEqual(suppressedOutcome(), suppressedOutcome(), 'a fresh object each time');
  });
});
