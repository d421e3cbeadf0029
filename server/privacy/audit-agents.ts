// What a patient sees of the people in their audit trail: the same as in the accounting of
// disclosures, their role and organization, never who they are; of a purpose, its codes, never its
// text; of the entities, the resources she may read and the request id, never the request as sent (it
// can name other patients) nor details or token ids. Pure.
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
 * and `who` only when it is a Patient (the patient themself); of the purpose of use, the codes only. Names, user ids, usernames (altId),
 * token ids (policy), network addresses and Practitioner references go.
 */
function agentForPatient(agent: Agent): Agent {
  const { type, role, requestor, who } = agent;
  const named = typed(agent, DCM, '110150') || typed(agent, ROLE_CLASS, 'PROV');
  const patient = typeof who?.reference === 'string' && /(^|\/)Patient\/[^/]+$/.test(who.reference);
  const purposeOfUse = each(agent.purposeOfUse, (concept) => purposeForPatient(concept, false));
  return Object.fromEntries(Object.entries({
    type, role, requestor, purposeOfUse,
    who: named ? who : patient ? { reference: who!.reference } : undefined,
  }).filter(([, value]) => value !== undefined));
}

const isRequestId = (entity: Record<string, unknown>) => (entity.type as { code?: unknown } | undefined)?.code === 'XrequestId';

/** Whether the reader may read a resource that carried these labels (AuditEvent.entity.securityLabel) when it was accessed. */
export type LabelsReadable = (securityLabel: unknown) => boolean;

/** What a report shows instead of a resource the reader may not read: its type only ("Observation(restricted)"). */
export const restrictedRecord = (type: string) => `${type}(restricted)`;

/** The resource type of a data entity (object-role 4 Domain Resource) the reader may not read; undefined for any other entity. */
export function hiddenType(entity: { role?: unknown; what?: unknown; securityLabel?: unknown }, readable: LabelsReadable): string | undefined {
  const reference = (entity.what as { reference?: unknown } | undefined)?.reference;
  if ((entity.role as { code?: unknown } | undefined)?.code !== '4' || typeof reference !== 'string' || readable(entity.securityLabel)) return undefined;
  return /([A-Z][A-Za-z]+)\/[^/]+(?:\/_history\/[^/]*)?$/.exec(reference)?.[1] ?? 'Resource';
}

/**
 * An entity as a patient may see it: what it is (type, role, lifecycle, labels) and the resource it names,
 * or the request id. Everything else goes: details (the user a launch is for, a token's scope), the request
 * as sent (`query`, `description`: it can name other patients) and identifiers of tokens and launches.
 * A resource she may not read herself is not named: the entity says that a restricted record of its type was
 * accessed, without its reference or labels (which would tell what kind of record it is).
 */
function entityForPatient(entity: Record<string, unknown>, readable: LabelsReadable): Record<string, unknown> {
  const { what, type, role, lifecycle, securityLabel } = entity;
  const hidden = hiddenType(entity, readable);
  if (hidden) return Object.fromEntries(Object.entries({ type, role, lifecycle, description: restrictedRecord(hidden) }).filter(([, value]) => value !== undefined));
  const reference = (what as { reference?: unknown } | undefined)?.reference;
  const shownWhat = isRequestId(entity) ? what : typeof reference === 'string' ? { reference } : undefined;
  return Object.fromEntries(Object.entries({ what: shownWhat, type, role, lifecycle, securityLabel }).filter(([, value]) => value !== undefined));
}

const each = <T>(list: unknown, map: (item: Record<string, unknown>) => T) =>
  (Array.isArray(list) ? list.map((item) => (item && typeof item === 'object' ? map(item as Record<string, unknown>) : item)) : list);

/**
 * A refused or failed FHIR access (outcome other than 0): not shown to a patient. It is recorded against
 * the patient of the stored resource it asked for, so it would tell them that a resource hidden from them
 * exists, and name it. The accounting of disclosures leaves it out for the same reason: nothing was disclosed.
 */
export const isRefusedAccess = (resource: FhirResource): boolean =>
  resource.resourceType === 'AuditEvent' && (resource.type as { code?: unknown } | undefined)?.code === 'rest' && resource.outcome !== '0';

/** DICOM 110113 Security Alert / 110127 Emergency Override Started: a break-the-glass token was issued. */
const isEmergencyOverride = (resource: FhirResource) =>
  (resource.type as { code?: unknown } | undefined)?.code === '110113'
  && Array.isArray(resource.subtype) && resource.subtype.some((s) => (s as { code?: unknown } | undefined)?.code === '110127');

/**
 * A purpose of use as a patient may see it: its codes, never its free text. The text of a break-the-glass
 * alert is the reason the clinician typed, which can name staff or other people: the privacy office reads
 * it; the patient reads "emergency access".
 */
function purposeForPatient(concept: Record<string, unknown>, emergency: boolean): Record<string, unknown> {
  const { coding } = concept;
  return { ...(coding !== undefined && { coding }), ...(emergency && { text: 'emergency access' }) };
}

/**
 * An AuditEvent with its agents, entities and purposes as a patient may see them (`readable`: her clearance,
 * for the resources the entities name); any other resource unchanged.
 */
export function auditEventForPatient(resource: FhirResource, readable: LabelsReadable): FhirResource {
  if (resource.resourceType !== 'AuditEvent') return resource;
  const shown: FhirResource = { ...resource };
  if (resource.purposeOfEvent !== undefined) {
    shown.purposeOfEvent = each(resource.purposeOfEvent, (concept) => purposeForPatient(concept, isEmergencyOverride(resource)));
  }
  if (resource.agent !== undefined) shown.agent = each(resource.agent, (agent) => agentForPatient(agent as Agent));
  if (resource.entity !== undefined) shown.entity = each(resource.entity, (entity) => entityForPatient(entity, readable));
  return shown;
}
