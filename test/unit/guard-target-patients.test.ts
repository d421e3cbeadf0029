// Which patients a refused request named (for its AuditEvent).
import assert from 'node:assert/strict';
import { MAX_NAMED_PATIENTS, namedPatients } from '../../server/resource-server/target-patients.ts';

const request = (path: string, query = '', body?: unknown) => ({ method: 'GET', path, query: new URLSearchParams(query), body });

describe('guard: the patients a request names', () => {
  it('reads them off the path: read, vread, compartment, instance operation', () => {
    for (const path of ['Patient/pat-2', 'Patient/pat-2/_history/3', 'Patient/pat-2/Observation', 'Patient/pat-2/$everything']) {
      assert.deepEqual(namedPatients(request(path)), ['pat-2'], path);
    }
    assert.deepEqual(namedPatients(request('Patient/$match')), []);
    assert.deepEqual(namedPatients(request('Patient/_search')), []);
    assert.deepEqual(namedPatients(request('Observation/obs-1')), [], 'a stored resource\'s patient is looked up by the guard, not guessed');
  });

  it('reads patient and subject parameters, _id of a Patient search, and a _search form', () => {
    assert.deepEqual(namedPatients(request('Observation', 'patient=pat-1,Patient/pat-2&subject=Patient/pat-3')), ['pat-1', 'pat-2', 'pat-3']);
    assert.deepEqual(namedPatients(request('Observation', 'subject=Group/g1&subject=pat-9')), [], 'a bare subject may be any type');
    assert.deepEqual(namedPatients(request('Observation', 'subject:Patient=pat-4&patient=https://fhir.example.org/r4/Patient/pat-5')), ['pat-4', 'pat-5']);
    assert.deepEqual(namedPatients(request('Patient', '_id=pat-6')), ['pat-6']);
    assert.deepEqual(namedPatients(request('Observation', '_id=obs-1')), []);
    assert.deepEqual(namedPatients(request('Observation/_search', '', new URLSearchParams('patient=pat-7'))), ['pat-7']);
  });

  it('reads the resource sent with a write', () => {
    assert.deepEqual(namedPatients(request('Observation', '', { resourceType: 'Observation', subject: { reference: 'Patient/pat-8' } })), ['pat-8']);
  });

  it('keeps only FHIR ids, and at most a few (one AuditEvent each)', () => {
    assert.deepEqual(namedPatients(request('Observation', `patient=${encodeURIComponent('a b,<x>,')}${'y'.repeat(65)}`)), []);
    const many = Array.from({ length: 50 }, (_, i) => `p${i}`).join(',');
    assert.equal(namedPatients(request('Observation', `patient=${many}`)).length, MAX_NAMED_PATIENTS);
  });
});
