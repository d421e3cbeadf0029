// Which patients a request names, for the audit of a refused request: the privacy office must find
// attempts on a patient's record even when nothing was disclosed. Pure.
import { patientsOf } from '../fhir/compartment.ts';
import type { FhirRequest, FhirResource } from './types.ts';

const ID = /^[A-Za-z0-9\-.]{1,64}$/;
/** A refused request records at most this many patients (one AuditEvent each). */
export const MAX_NAMED_PATIENTS = 20;

/** "Patient/x", "x" (when a bare id means a patient) or an absolute URL ending in Patient/x. */
function patientId(value: string, bareIsPatient: boolean): string | undefined {
  const match = /(?:^|\/)Patient\/([^/]+)$/.exec(value);
  const id = match ? match[1] : bareIsPatient ? value : undefined;
  return id !== undefined && ID.test(id) ? id : undefined;
}

/**
 * The patients named by the path (`Patient/x`, `Patient/x/_history/1`, `Patient/x/Observation`,
 * `Patient/x/$everything`), by `patient` / `subject` search parameters (also `_id` of a Patient search,
 * and a `_search` form), and by the resource sent with a write.
 */
export function namedPatients(request: FhirRequest): string[] {
  const found = new Set<string>();
  const [type, id] = request.path.split('/');
  if (type === 'Patient' && id !== undefined && !id.startsWith('$') && !id.startsWith('_')) {
    const patient = patientId(id, true);
    if (patient) found.add(patient);
  }
  const params = new URLSearchParams(request.query);
  if (request.body instanceof URLSearchParams) for (const [k, v] of request.body) params.append(k, v);
  for (const [key, value] of params) {
    const name = key.split(':')[0];
    const modifier = key.split(':')[1];
    const bare = name === 'patient' || modifier === 'Patient' || (name === '_id' && type === 'Patient');
    if (name !== 'patient' && name !== 'subject' && !(name === '_id' && type === 'Patient')) continue;
    for (const v of value.split(',')) {
      const patient = patientId(v.trim(), bare);
      if (patient) found.add(patient);
    }
  }
  const body = request.body as FhirResource | undefined;
  if (body && typeof body === 'object' && !(body instanceof URLSearchParams) && typeof body.resourceType === 'string') {
    for (const patient of patientsOf(body)) found.add(patient);
  }
  return [...found].slice(0, MAX_NAMED_PATIENTS);
}
