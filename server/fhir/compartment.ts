// The FHIR R4 Patient compartment (https://hl7.org/fhir/R4/compartmentdefinition-patient.html)
// as data, plus membership helpers. Pure: no I/O, no store access.
//
// Element paths are dotted, relative to the resource root (`entity.what` means
// AuditEvent.entity.what); arrays are traversed at every step. Each path ends at
// a Reference; only references whose target is `Patient/<id>` (relative, or
// absolute ending in `Patient/<id>[/_history/<v>]`) link a resource to a patient,
// which stands in for the FHIRPath `.where(resolve() is Patient)` filters.

import type { FhirResource } from './types.ts';

type ParamPaths = Readonly<Record<string, readonly string[]>>;

/** The resource itself is the patient (used for Patient only). */
export const SELF = '{def}';

/**
 * type ⇒ compartment search parameter ⇒ element paths holding the reference.
 * Types absent here (Practitioner, Organization, Medication, Location, Device,
 * Questionnaire, ValueSet, …) are not in the Patient compartment.
 */
export const PATIENT_COMPARTMENT: Readonly<Record<string, ParamPaths>> = deepFreeze({
  Account: { subject: ['subject'] },
  AdverseEvent: { subject: ['subject'] },
  AllergyIntolerance: { patient: ['patient'], recorder: ['recorder'], asserter: ['asserter'] },
  Appointment: { actor: ['participant.actor'] },
  AppointmentResponse: { actor: ['actor'] },
  AuditEvent: { patient: ['agent.who', 'entity.what'] },
  Basic: { patient: ['subject'], author: ['author'] },
  BodyStructure: { patient: ['patient'] },
  CarePlan: { patient: ['subject'], performer: ['activity.detail.performer'] },
  CareTeam: { patient: ['subject'], participant: ['participant.member'] },
  ChargeItem: { subject: ['subject'] },
  Claim: { patient: ['patient'], payee: ['payee.party'] },
  ClaimResponse: { patient: ['patient'] },
  ClinicalImpression: { subject: ['subject'] },
  Communication: { subject: ['subject'], sender: ['sender'], recipient: ['recipient'] },
  CommunicationRequest: { subject: ['subject'], sender: ['sender'], recipient: ['recipient'], requester: ['requester'] },
  Composition: { subject: ['subject'], author: ['author'], attester: ['attester.party'] },
  Condition: { patient: ['subject'], asserter: ['asserter'] },
  Consent: { patient: ['patient'] },
  Coverage: {
    'policy-holder': ['policyHolder'],
    subscriber: ['subscriber'],
    beneficiary: ['beneficiary'],
    payor: ['payor'],
  },
  CoverageEligibilityRequest: { patient: ['patient'] },
  CoverageEligibilityResponse: { patient: ['patient'] },
  DetectedIssue: { patient: ['patient'] },
  DeviceRequest: { subject: ['subject'], performer: ['performer'] },
  DeviceUseStatement: { subject: ['subject'] },
  DiagnosticReport: { subject: ['subject'] },
  DocumentManifest: { subject: ['subject'], author: ['author'], recipient: ['recipient'] },
  DocumentReference: { subject: ['subject'], author: ['author'] },
  Encounter: { patient: ['subject'] },
  EnrollmentRequest: { subject: ['candidate'] },
  EpisodeOfCare: { patient: ['patient'] },
  ExplanationOfBenefit: { patient: ['patient'], payee: ['payee.party'] },
  FamilyMemberHistory: { patient: ['patient'] },
  Flag: { patient: ['subject'] },
  Goal: { patient: ['subject'] },
  Group: { member: ['member.entity'] },
  ImagingStudy: { patient: ['subject'] },
  Immunization: { patient: ['patient'] },
  ImmunizationEvaluation: { patient: ['patient'] },
  ImmunizationRecommendation: { patient: ['patient'] },
  Invoice: { subject: ['subject'], patient: ['subject'], recipient: ['recipient'] },
  List: { subject: ['subject'], source: ['source'] },
  MeasureReport: { patient: ['subject'] },
  Media: { subject: ['subject'] },
  MedicationAdministration: { patient: ['subject'], performer: ['performer.actor'], subject: ['subject'] },
  MedicationDispense: { subject: ['subject'], patient: ['subject'], receiver: ['receiver'] },
  MedicationRequest: { subject: ['subject'] },
  MedicationStatement: { subject: ['subject'] },
  MolecularSequence: { patient: ['patient'] },
  NutritionOrder: { patient: ['patient'] },
  Observation: { subject: ['subject'], performer: ['performer'] },
  Patient: { [SELF]: [], link: ['link.other'] },
  Person: { patient: ['link.target'] },
  Procedure: { patient: ['subject'], performer: ['performer.actor'] },
  Provenance: { patient: ['target'] },
  QuestionnaireResponse: { subject: ['subject'], author: ['author'] },
  RelatedPerson: { patient: ['patient'] },
  RequestGroup: { subject: ['subject'], participant: ['action.participant'] },
  ResearchSubject: { individual: ['individual'] },
  RiskAssessment: { subject: ['subject'] },
  Schedule: { actor: ['actor'] },
  ServiceRequest: { subject: ['subject'], performer: ['performer'] },
  Specimen: { subject: ['subject'] },
  SupplyDelivery: { patient: ['patient'] },
  SupplyRequest: { subject: ['deliverTo'] },
  VisionPrescription: { patient: ['patient'] },
});

/** type ⇒ every element path (deduplicated) that can link it to a Patient. */
export const PATIENT_COMPARTMENT_PATHS: Readonly<Record<string, readonly string[]>> = deepFreeze(
  Object.fromEntries(
    Object.entries(PATIENT_COMPARTMENT).map(([type, params]) => [type, [...new Set(Object.values(params).flat())]]),
  ),
);

/** The compartment search parameters of `type` (`{def}` for Patient itself); undefined ⇒ not in the compartment. */
export function patientCompartmentParams(type: string): readonly string[] | undefined {
  const params = own(PATIENT_COMPARTMENT, type);
  return params ? Object.keys(params) : undefined;
}

/** Element paths of one compartment parameter of `type`; undefined when the type or parameter is not in the compartment. */
export function compartmentParamPaths(type: string, param: string): readonly string[] | undefined {
  const params = own(PATIENT_COMPARTMENT, type);
  return params ? own(params, param) : undefined;
}

/**
 * True when `resource` is in the compartment of Patient `patientId` (`pat-1`
 * or `Patient/pat-1`): it is that Patient, or one of its type's compartment
 * element paths references `Patient/<patientId>`.
 */
export function isInPatientCompartment(resource: FhirResource, patientId: string): boolean {
  const id = patientId.startsWith('Patient/') ? patientId.slice('Patient/'.length) : patientId;
  if (id === '') return false;
  return patientsOf(resource).includes(id);
}

/**
 * Every patient id `resource` links to through its compartment paths, in
 * document order, deduplicated. For a Patient: its own id first, then any
 * Patient it links to (Patient.link.other, the R4 `link` parameter).
 * Empty for types outside the compartment.
 */
export function patientsOf(resource: FhirResource): string[] {
  const paths = own(PATIENT_COMPARTMENT_PATHS, resource.resourceType);
  if (!paths) return [];
  const ids = new Set<string>();
  if (resource.resourceType === 'Patient' && typeof resource.id === 'string' && resource.id !== '') ids.add(resource.id);
  for (const path of paths) {
    for (const target of referencesAt(resource, path)) {
      if (target.type === 'Patient') ids.add(target.id);
    }
  }
  return [...ids];
}

/** All values at a dotted element path, flattening arrays at every step. */
export function valuesAt(node: unknown, path: string): unknown[] {
  let current: unknown[] = [node];
  for (const step of path.split('.')) {
    const next: unknown[] = [];
    for (const value of current) {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) continue;
      if (!Object.hasOwn(value, step)) continue;
      const child = (value as Record<string, unknown>)[step];
      if (Array.isArray(child)) next.push(...child);
      else if (child !== undefined && child !== null) next.push(child);
    }
    current = next;
  }
  return current;
}

export interface ReferenceTarget {
  type: string;
  id: string;
}

const REFERENCE = /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/;

/**
 * `Type/id` of a literal reference: relative (`Patient/pat-1`), versioned
 * (`…/_history/2`) or absolute (`https://host/fhir/Patient/pat-1`).
 * Undefined for contained (`#x`), `urn:` and malformed references.
 */
export function parseReference(reference: string): ReferenceTarget | undefined {
  if (reference.startsWith('#') || reference.startsWith('urn:')) return undefined;
  const m = REFERENCE.exec(reference);
  if (!m) return undefined;
  // A relative reference must be exactly Type/id(/_history/v); an absolute one needs a scheme.
  if (m.index !== 0 && !/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(reference)) return undefined;
  return { type: m[1], id: m[2] };
}

/** Targets of the Reference values at `path` (logical references without `reference` are skipped). */
export function referencesAt(resource: unknown, path: string): ReferenceTarget[] {
  const targets: ReferenceTarget[] = [];
  for (const value of valuesAt(resource, path)) {
    if (value === null || typeof value !== 'object') continue;
    const reference = (value as { reference?: unknown }).reference;
    if (typeof reference !== 'string') continue;
    const target = parseReference(reference);
    if (target) targets.push(target);
  }
  return targets;
}

function own<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
