import assert from 'node:assert/strict';
import { applyOperation, knownOperation } from '../../server/resource-server/operations.ts';
import type { FhirResource } from '../../server/resource-server/types.ts';

const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const stored: FhirResource = {
  resourceType: 'Observation', id: 'obs-1',
  meta: { versionId: '3', security: [{ system: CONF, code: 'R' }, { system: ACT, code: 'HIV' }], tag: [{ system: 'urn:t', code: 'a' }], profile: ['urn:p'] },
};
const params = (meta: unknown) => ({ resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: meta }] });
const metaOf = (result: ReturnType<typeof applyOperation>) => {
  assert.ok('resourceType' in result, JSON.stringify(result));
  return result.meta!;
};

describe('resource-server/operations', () => {
  it('knows which operations read and which write, at which levels', () => {
    assert.deepEqual(knownOperation('meta-delete'), { effect: 'write', levels: ['instance'] });
    assert.equal(knownOperation('everything')?.effect, 'read');
    for (const name of ['export', 'graphql', 'process-message', 'toString', '__proto__']) assert.equal(knownOperation(name), undefined, name);
  });

  it('$meta-add adds what is not there yet; $meta-delete removes what it names', () => {
    const added = metaOf(applyOperation('meta-add', stored, params({ security: [{ system: ACT, code: 'HIV' }, { system: ACT, code: 'SUD' }], profile: ['urn:q'] })));
    assert.deepEqual(added.security, [{ system: CONF, code: 'R' }, { system: ACT, code: 'HIV' }, { system: ACT, code: 'SUD' }]);
    assert.deepEqual(added.profile, ['urn:p', 'urn:q']);
    assert.equal(added.versionId, '3');
    const deleted = metaOf(applyOperation('meta-delete', stored, params({ tag: [{ system: 'urn:t', code: 'a' }], security: [{ system: ACT, code: 'HIV' }] })));
    assert.deepEqual([deleted.tag, deleted.security], [[], [{ system: CONF, code: 'R' }]]);
  });

  it('takes a coding without a system to remove whatever code matches (fails closed)', () => {
    assert.deepEqual(metaOf(applyOperation('meta-delete', stored, params({ security: [{ code: 'HIV' }] }))).security, [{ system: CONF, code: 'R' }]);
    assert.deepEqual(metaOf(applyOperation('meta-delete', stored, params({ security: [{}] }))).security, []);
  });

  it('refuses a body without a meta parameter, and an operation it cannot apply', () => {
    for (const body of [undefined, {}, { resourceType: 'Parameters' }, params(null), params('x')]) {
      const refused = applyOperation('meta-add', stored, body);
      assert.ok(!('resourceType' in refused) && refused.status === 400, JSON.stringify(body));
    }
    const other = applyOperation('everything', stored, params({}));
    assert.ok(!('resourceType' in other) && other.status === 403);
  });
});
