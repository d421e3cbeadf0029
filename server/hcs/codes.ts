// HL7 security vocabularies used in tokens and labels (THO): purpose of use with its is-a tree,
// the confidentiality scale, and the privacy-officer role. Sensitivity codes are the policy's (label-vocabulary.ts). Pure.

export const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
export const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
export const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';

/** Other names of the same v3 code systems (their OIDs, FHIR STU3 URIs): a label written so means the same. */
const SYSTEM_ALIASES: Record<string, string> = {
  'urn:oid:2.16.840.1.113883.5.25': CONFIDENTIALITY, 'http://hl7.org/fhir/v3/Confidentiality': CONFIDENTIALITY,
  'urn:oid:2.16.840.1.113883.5.4': ACT_CODE, 'http://hl7.org/fhir/v3/ActCode': ACT_CODE,
  'urn:oid:2.16.840.1.113883.5.8': ACT_REASON, 'http://hl7.org/fhir/v3/ActReason': ACT_REASON,
};

/** The canonical (terminology.hl7.org) URI of a code system written under another of its names. */
export const canonicalSystem = (system: string): string => (Object.hasOwn(SYSTEM_ALIASES, system) ? SYSTEM_ALIASES[system] : system);

export interface Coding {
  system: string;
  code: string;
  display?: string;
}

/** Each purpose of use and its parent (v3-ActReason, the PurposeOfUse value set). */
const PURPOSE_PARENT: Record<string, string | null> = {
  TREAT: null, ETREAT: 'TREAT', BTG: 'ETREAT', ERTREAT: 'ETREAT', COC: 'TREAT', CLINTRL: 'TREAT', POPHLTH: 'TREAT', TREATDS: 'TREAT',
  HPAYMT: null, CLMATTCH: 'HPAYMT', COVAUTH: 'HPAYMT', COVERAGE: 'HPAYMT', ELIGDTRM: 'COVERAGE', ELIGVER: 'COVERAGE', ENROLLM: 'COVERAGE',
  MILDCRG: 'COVERAGE', REMITADV: 'HPAYMT', PMTDS: 'HPAYMT',
  HOPERAT: null, CAREMGT: 'HOPERAT', DONAT: 'HOPERAT', FRAUD: 'HOPERAT', GOV: 'HOPERAT', HACCRED: 'HOPERAT', HCOMPL: 'HOPERAT',
  HDECD: 'HOPERAT', HDIRECT: 'HOPERAT', HDM: 'HOPERAT', HLEGAL: 'HOPERAT', HOUTCOMS: 'HOPERAT', HPRGRP: 'HOPERAT', HQUALIMP: 'HOPERAT',
  HSYSADMIN: 'HOPERAT', LABELING: 'HSYSADMIN', METAMGT: 'HSYSADMIN', MEMADMIN: 'HOPERAT', MILCDM: 'HOPERAT', PATADMIN: 'HOPERAT',
  PATSFTY: 'HOPERAT', PERFMSR: 'HOPERAT', RECORDMGT: 'HOPERAT', SYSDEV: 'HOPERAT', HTEST: 'SYSDEV', TRAIN: 'HOPERAT', MLTRAINING: 'HOPERAT',
  HRESCH: null, BIORCH: 'HRESCH', CLINTRCH: 'HRESCH', CLINTRCHNPC: 'CLINTRCH', CLINTRCHPC: 'CLINTRCH', PRECLINTRCH: 'CLINTRCH',
  DSRCH: 'HRESCH', POARCH: 'HRESCH', TRANSRCH: 'HRESCH',
  PATRQT: null, FAMRQT: 'PATRQT', PWATRNY: 'PATRQT', SUPNWK: 'PATRQT',
  PUBHLTH: null, DISASTER: 'PUBHLTH', THREAT: 'PUBHLTH',
  HMARKT: null,
};

const PURPOSE_DISPLAY: Record<string, string> = {
  TREAT: 'treatment', ETREAT: 'emergency treatment', BTG: 'break the glass', ERTREAT: 'emergency room treatment',
  HPAYMT: 'healthcare payment', HOPERAT: 'healthcare operations', HTEST: 'test health data', HRESCH: 'healthcare research',
  PATRQT: 'patient requested', FAMRQT: 'family requested', PWATRNY: 'power of attorney', PUBHLTH: 'public health',
  HMARKT: 'healthcare marketing', COC: 'continuity of care', CAREMGT: 'care management', PATADMIN: 'patient administration',
  RECORDMGT: 'records management', HSYSADMIN: 'system administration', SYSDEV: 'system development',
};

/** Purposes of use in the words a patient would use, for the patient's own consent page. */
const PURPOSE_PLAIN: Record<string, string> = {
  PATRQT: 'You asked for it: it is your own record', FAMRQT: 'A family member asked for it', PWATRNY: 'You hold a power of attorney',
};

/** Test data (HTEST-labelled) is for a purpose that is-a HTEST only, and such a purpose sees only test data. */
export const isTestPurpose = (purpose: string): boolean => purposeIsA(purpose, 'HTEST');

export const plainPurpose = (code: string): string => PURPOSE_PLAIN[code] ?? purposeDisplay(code);

export function isPurposeOfUse(code: string): boolean {
  return Object.hasOwn(PURPOSE_PARENT, code);
}

/** is-a over the PurposeOfUse tree: BTG is-a ETREAT is-a TREAT; HTEST is-a SYSDEV is-a HOPERAT. */
export function purposeIsA(code: string, ancestor: string): boolean {
  for (let current: string | null | undefined = code; current; current = PURPOSE_PARENT[current]) {
    if (current === ancestor) return true;
  }
  return false;
}

export function purposeCoding(code: string): Coding {
  return { system: ACT_REASON, code, ...(PURPOSE_DISPLAY[code] && { display: PURPOSE_DISPLAY[code] }) };
}

export const purposeDisplay = (code: string) => PURPOSE_DISPLAY[code] ?? code;

/** v3-Confidentiality, lowest to highest. */
export const CONFIDENTIALITY_SCALE = ['U', 'L', 'M', 'N', 'R', 'V'] as const;
export type ConfidentialityCode = (typeof CONFIDENTIALITY_SCALE)[number];

export function isConfidentiality(code: string): code is ConfidentialityCode {
  return (CONFIDENTIALITY_SCALE as readonly string[]).includes(code);
}

export const confidentialityRank = (code: ConfidentialityCode) => CONFIDENTIALITY_SCALE.indexOf(code);

/** The confidentiality codes above a ceiling (what a token at that clearance may not see). */
export function confidentialityAbove(ceiling: ConfidentialityCode): ConfidentialityCode[] {
  return CONFIDENTIALITY_SCALE.slice(confidentialityRank(ceiling) + 1);
}

/**
 * The subject_role of a privacy officer: may write Consent and lower or remove security labels. No HL7
 * or IHE code names this role, so smart-auth defines one; the authorization server issues it only to
 * users created with `--privacy-officer` and backends registered with `--privacy-officer`.
 */
export const PRIVACY_OFFICER: Coding = { system: 'urn:smart-auth:security-role', code: 'privacy-officer', display: 'privacy officer' };

export const isPrivacyOfficerRole = (coding: Coding) => coding.system === PRIVACY_OFFICER.system && coding.code === PRIVACY_OFFICER.code;

/** Accepts a single Coding or an array of Codings (IUA examples use arrays, the Swiss EPR a single object). */
export function codingList(value: unknown): Coding[] {
  const items = Array.isArray(value) ? value : value === undefined || value === null ? [] : [value];
  return items.filter((c): c is Coding => typeof c === 'object' && c !== null && typeof c.system === 'string' && typeof c.code === 'string');
}
