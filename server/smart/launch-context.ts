// SMART launch context: what a token response carries besides the tokens (SMART App Launch 2.2).

export interface FhirContextItem {
  reference?: string;
  canonical?: string;
  identifier?: { system?: string; value: string };
  type?: string;
  role?: string;
}

export interface LaunchContext {
  patient?: string;
  encounter?: string;
  fhirContext?: FhirContextItem[];
  need_patient_banner: boolean;
  smart_style_url: string;
  tenant?: string;
  intent?: string;
}

/** The context of one launch: EHR launches show their own banner, standalone apps show one. */
export function buildLaunchContext(input: {
  patient?: string;
  encounter?: string;
  /** Further resources of the launch (SMART 2.2: Patient and Encounter travel in their own fields). */
  fhirContext?: FhirContextItem[];
  ehrLaunch: boolean;
  styleUrl: string;
  tenant?: string;
}): LaunchContext {
  const context: LaunchContext = {
    need_patient_banner: !input.ehrLaunch,
    smart_style_url: input.styleUrl,
  };
  if (input.patient) context.patient = input.patient;
  if (input.encounter) context.encounter = input.encounter;
  if (input.fhirContext?.length) context.fhirContext = input.fhirContext;
  if (input.tenant) context.tenant = input.tenant;
  return context;
}

const REFERENCE = /^([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}$/;

/** A relative reference usable in fhirContext, or an explanation of why not. */
export function checkFhirContextReference(reference: string): string | undefined {
  const match = REFERENCE.exec(reference);
  if (!match) return `"${reference}" is not a relative reference such as Observation/123`;
  if (match[1] === 'Patient' || match[1] === 'Encounter') return `${match[1]} goes in the patient or encounter parameter, not in fhirContext`;
  return undefined;
}
