// Reading the bundled /fhir as a caller sees it: through its guard with the caller's own access token, so
// the token's scopes, clearance, consents and patient list apply, and the read is audited as the caller's.
import type { Guard } from '../resource-server/guard.ts';
import type { PatientDirectory } from './patient-directory.ts';
import type { FhirResource } from './types.ts';
import { patientsOf } from './compartment.ts';
import { AuditWriteError } from '../audit/audit-store.ts';

/** Like PatientDirectory.patientsOfResource, but a resource the token may not read is one the server does not have. */
export function patientsOfResourceAs(guard: Guard, token: string, remoteAddress?: string): PatientDirectory['patientsOfResource'] {
  return async (type, id) => {
    const res = await guard.handle({ method: 'GET', path: `/${type}/${encodeURIComponent(id)}`, headers: { authorization: `Bearer ${token}` }, remoteAddress });
    // The guard could not read or record it (the FHIR server or the audit trail is down): not an unknown resource.
    // 503 is its answer to a read it cannot record (it checks this server's tokens without a network call).
    if (res.status === 503) throw new AuditWriteError(`reading ${type}/${id} as the caller could not be recorded`);
    if (res.status >= 500) throw new Error(`reading ${type}/${id} as the caller failed: ${res.status}`);
    return res.status === 200 ? patientsOf(res.body as FhirResource) : undefined;
  };
}
