// HCS attributes in an access token: IHE IUA `extensions.ihe_iua` (who, for what purpose) and the
// clearance as IHE PCF `extensions.ihe_pcf.residual` forbid rules. Pure.
import { ACT_CODE, CONFIDENTIALITY, confidentialityAbove, purposeCoding, type Coding } from './codes.ts';
import { DEFAULT_LABEL_VOCABULARY, knownSensitivities, sensitivityClosure, type LabelVocabulary } from './label-vocabulary.ts';
import type { Clearance } from './policy.ts';

export interface IheIua {
  subject_name?: string;
  subject_id?: string;
  subject_organization?: string;
  subject_organization_id?: string;
  subject_role?: Coding[];
  purpose_of_use?: Coding[];
}

export interface PcfResidual {
  type: 'forbid' | 'permit';
  securityLabel: Coding[];
}

/**
 * The labels a clearance forbids: confidentiality above its ceiling, and each known sensitivity of
 * which it covers nothing (a forbid catches what a code subsumes: forbidding SPI would also hide the
 * PSY a clearance grants, so a category partly granted is left to the codes under it).
 */
export function residualFor(clearance: Clearance, vocabulary: LabelVocabulary = DEFAULT_LABEL_VOCABULARY): PcfResidual[] {
  const covered = new Set(clearance.sensitivities.flatMap((s) => [...sensitivityClosure(s, vocabulary)]));
  const forbidden = knownSensitivities(vocabulary).filter((code) => ![...sensitivityClosure(code, vocabulary)].some((c) => covered.has(c)));
  const labels: Coding[] = [
    ...confidentialityAbove(clearance.ceiling).map((code) => ({ system: CONFIDENTIALITY, code })),
    ...forbidden.map((code) => ({ system: ACT_CODE, code })),
  ];
  return labels.length ? [{ type: 'forbid', securityLabel: labels }] : [];
}

export interface UserClaimsInput {
  name?: string | null;
  organization?: string;
  organizationId?: string;
  roles: Coding[];
  purpose?: string;
  clearance: Clearance;
  /** Absolute Patient URL when the token is about one patient. */
  patientUrl?: string;
  /** The policy's label vocabulary (default: the bundled policy's). */
  labels?: LabelVocabulary;
}

export function userSecurityClaims(input: UserClaimsInput): { extensions: { ihe_iua: IheIua; ihe_pcf?: { patient_id?: string; residual: PcfResidual[] } } } {
  const iua: IheIua = {};
  if (input.name) iua.subject_name = input.name;
  if (input.organization) iua.subject_organization = input.organization;
  if (input.organizationId) iua.subject_organization_id = input.organizationId;
  if (input.roles.length) iua.subject_role = input.roles;
  if (input.purpose) iua.purpose_of_use = [purposeCoding(input.purpose)];
  const residual = residualFor(input.clearance, input.labels);
  return {
    extensions: {
      ihe_iua: iua,
      ...(residual.length && { ihe_pcf: { ...(input.patientUrl && { patient_id: input.patientUrl }), residual } }),
    },
  };
}
