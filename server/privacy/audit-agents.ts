// What a patient sees of the people in their audit trail: the same as in the accounting of
// disclosures, their role and organization, never who they are; and of a search, what it was about,
// never the request as sent (it can name other patients). Pure.
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

/** An entity as a patient may see it: a query entity without the request as sent (`query`, `description`). */
function entityForPatient(entity: Record<string, unknown>): Record<string, unknown> {
  const { query: _query, description: _description, ...rest } = entity;
  return 'query' in entity ? rest : entity;
}

const each = <T>(list: unknown, map: (item: Record<string, unknown>) => T) =>
  (Array.isArray(list) ? list.map((item) => (item && typeof item === 'object' ? map(item as Record<string, unknown>) : item)) : list);

/** An AuditEvent with its agents and query entities as a patient may see them; any other resource unchanged. */
export function auditEventForPatient(resource: FhirResource): FhirResource {
  if (resource.resourceType !== 'AuditEvent') return resource;
  const shown: FhirResource = { ...resource };
  if (resource.agent !== undefined) shown.agent = each(resource.agent, (agent) => agentForPatient(agent as Agent));
  if (resource.entity !== undefined) shown.entity = each(resource.entity, entityForPatient);
  return shown;
}
