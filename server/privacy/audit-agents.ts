// What a patient sees of the people in their audit trail: the same as in the accounting of
// disclosures, their role and organization, never who they are. Pure.
import type { FhirResource } from '../resource-server/types.ts';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const ROLE_CLASS = 'http://terminology.hl7.org/CodeSystem/v3-RoleClass';

interface Agent {
  type?: { coding?: { system?: string; code?: string }[] };
  who?: { reference?: string; display?: string; identifier?: unknown };
  [element: string]: unknown;
}

const typed = (agent: Agent, system: string, code: string) => Boolean(agent.type?.coding?.some((c) => c?.system === system && c.code === code));

/**
 * An agent as a patient may see it. The application (DICOM 110150) and an organization (v3-RoleClass
 * PROV) keep who they are; every other agent keeps its type, role, requestor flag and purpose of use,
 * and `who` only when it is a Patient (the patient themself). Names, user ids, usernames (altId),
 * token ids (policy), network addresses and Practitioner references go.
 */
function agentForPatient(agent: Agent): Agent {
  const { type, role, requestor, purposeOfUse, who } = agent;
  const named = typed(agent, DCM, '110150') || typed(agent, ROLE_CLASS, 'PROV');
  const patient = typeof who?.reference === 'string' && /(^|\/)Patient\/[^/]+$/.test(who.reference);
  return Object.fromEntries(Object.entries({
    type, role, requestor, purposeOfUse,
    who: named ? who : patient ? { reference: who!.reference } : undefined,
  }).filter(([, value]) => value !== undefined));
}

/** An AuditEvent with its agents as a patient may see them; any other resource unchanged. */
export function auditEventForPatient(resource: FhirResource): FhirResource {
  if (resource.resourceType !== 'AuditEvent' || !Array.isArray(resource.agent)) return resource;
  return { ...resource, agent: (resource.agent as Agent[]).map((agent) => (agent && typeof agent === 'object' ? agentForPatient(agent) : agent)) };
}
