// Search narrowing: what a bounded token's search adds before it goes upstream. Only ever more restrictions.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { narrowedSearch, patientParam } from '../../server/resource-server/narrow.ts';

const q = (query: string) => new URLSearchParams(query);
const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';

describe('guard: search narrowing', () => {
  it('adds the patient to the type\'s patient parameter, _id for Patient', () => {
    assert.equal(narrowedSearch('Encounter', q('_count=10'), [{ patients: ['pat-1'], query: [] }]).toString(), '_count=10&patient=Patient%2Fpat-1');
    assert.equal(narrowedSearch('Observation', q(''), [{ patients: ['pat-1'], query: [] }]).get('subject'), 'Patient/pat-1');
    assert.equal(narrowedSearch('Patient', q(''), [{ patients: ['pat-1', 'pat-2'], query: [] }]).get('_id'), 'pat-1,pat-2');
    assert.equal(patientParam('Encounter'), 'patient');
    assert.equal(patientParam('Observation'), 'subject');
    assert.equal(patientParam('Practitioner'), undefined);
  });

  it('keeps what the client asked: a patient of its own is ANDed, so another patient\'s data stays out', () => {
    const narrowed = narrowedSearch('Encounter', q('patient=pat-9'), [{ patients: ['pat-1'], query: [] }]);
    assert.deepEqual(narrowed.getAll('patient'), ['pat-9', 'Patient/pat-1']);
  });

  it('adds a query-restricted scope\'s restriction when it is the only view', () => {
    assert.deepEqual(narrowedSearch('Observation', q(''), [{ patients: ['pat-1'], query: [['category', LAB]] }]).getAll('category'), [LAB]);
    const two = narrowedSearch('Observation', q(''), [{ patients: ['pat-1'], query: [['category', LAB]] }, { patients: ['pat-1'], query: [['category', 'vital-signs']] }]);
    assert.deepEqual(two.getAll('category'), [], 'a union of restrictions is not one query');
    assert.equal(two.get('subject'), 'Patient/pat-1');
  });

  it('leaves unbounded, system-wide, over-long and malformed patient lists to the filter', () => {
    assert.equal(narrowedSearch('Observation', q('code=1'), [{ query: [] }]).toString(), 'code=1');
    assert.equal(narrowedSearch('Observation', q(''), [{ patients: ['pat-1'], query: [] }, { query: [] }]).toString(), '', 'one unbounded view');
    assert.equal(narrowedSearch(undefined, q(''), [{ patients: ['pat-1'], query: [] }]).toString(), '');
    assert.equal(narrowedSearch('Observation', q(''), [{ patients: Array.from({ length: 101 }, (_, i) => `p${i}`), query: [] }]).toString(), '');
    assert.equal(narrowedSearch('Observation', q(''), [{ patients: ['a,Patient/b'], query: [] }]).toString(), '');
  });

  it('never drops or changes a parameter the client sent (property)', () => {
    const name = fc.stringMatching(/^[a-z_][a-z-]{0,8}$/);
    fc.assert(fc.property(fc.array(fc.tuple(name, fc.string({ maxLength: 8 }))), fc.array(fc.stringMatching(/^[a-z0-9-]{1,8}$/), { minLength: 1, maxLength: 3 }), (pairs, patients) => {
      const params = new URLSearchParams(pairs);
      const narrowed = narrowedSearch('Observation', params, [{ patients, query: [] }]);
      assert.deepEqual([...narrowed].slice(0, pairs.length), [...params]);
    }));
  });
});
