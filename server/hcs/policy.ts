// The HCS policy: which purposes of use a user may assert (role x purpose-of-use matrix), and what a
// user's clearance and an emergency (break-the-glass) access mean for label restrictions. The rules
// are pure functions; loadPolicy reads the JSON file (POLICY_FILE, or the bundled default).
import { readFileSync } from 'node:fs';
import type { Coding } from './codes.ts';
import {
  CONFIDENTIALITY_SCALE, confidentialityRank, isConfidentiality, isPurposeOfUse, purposeIsA,
  type ConfidentialityCode,
} from './codes.ts';
import { knownSensitivities, parseLabelVocabulary, type LabelVocabulary } from './label-vocabulary.ts';

export interface HcsPolicy {
  rolePurposes: { role: string; purposes: string[] }[];
  /** Purposes a user without any role may assert (still limited to the user's own list). */
  withoutRole: string[];
  defaultPurpose: { patient: string; other: string };
  /** Purposes that are an emergency override: only for break-glass users, with a reason, short-lived, never refreshed, alerted. */
  emergencyPurposes: string[];
  breakGlass: { ceiling: ConfidentialityCode; allSensitivities: boolean };
  /** The meta.security vocabulary: known sensitivities and harmless labels. */
  labels: LabelVocabulary;
  /** Roles ("<system>|<code>") whose users must sign in with a second factor. */
  secondFactorRoles: string[];
}

export class PolicyError extends Error {
  override name = 'PolicyError';
}

const DEFAULT_POLICY_FILE = new URL('./default-policy.json', import.meta.url);

export function parsePolicy(json: unknown, source: string): HcsPolicy {
  const fail = (message: string): never => {
    throw new PolicyError(`${source}: ${message}`);
  };
  const p = json as Partial<Omit<HcsPolicy, 'labels'>> & { labels?: unknown };
  if (!p || typeof p !== 'object') fail('must be a JSON object');
  const codes = (list: unknown, where: string) => {
    if (!Array.isArray(list) || list.some((c) => typeof c !== 'string' || !isPurposeOfUse(c))) fail(`${where} must list v3-ActReason purpose-of-use codes`);
    return list as string[];
  };
  if (!Array.isArray(p.rolePurposes)) fail('rolePurposes must be an array');
  const rolePurposes = p.rolePurposes!.map((entry, i) => {
    if (typeof entry?.role !== 'string' || !/^.+\|.+$/.test(entry.role)) fail(`rolePurposes[${i}].role must be "<system>|<code>"`);
    return { role: entry.role, purposes: codes(entry.purposes, `rolePurposes[${i}].purposes`) };
  });
  const ceiling = p.breakGlass?.ceiling;
  if (!ceiling || !isConfidentiality(ceiling)) fail('breakGlass.ceiling must be one of U L M N R V');
  if (ceiling === 'V') fail('breakGlass.ceiling must be below V: break-the-glass never releases very restricted data');
  if (p.secondFactorRoles !== undefined && (!Array.isArray(p.secondFactorRoles) || p.secondFactorRoles.some((r) => typeof r !== 'string' || !/^.+\|.+$/.test(r)))) {
    fail('secondFactorRoles must list roles as "<system>|<code>"');
  }
  const defaults = p.defaultPurpose;
  if (!defaults || !isPurposeOfUse(defaults.patient) || !isPurposeOfUse(defaults.other)) fail('defaultPurpose needs a patient and an other purpose-of-use code');
  return {
    rolePurposes,
    withoutRole: codes(p.withoutRole, 'withoutRole'),
    defaultPurpose: defaults!,
    emergencyPurposes: codes(p.emergencyPurposes, 'emergencyPurposes'),
    breakGlass: { ceiling: ceiling!, allSensitivities: p.breakGlass?.allSensitivities !== false },
    labels: parseLabelVocabulary(p.labels, fail),
    secondFactorRoles: p.secondFactorRoles ?? [],
  };
}

export function loadPolicy(file?: string): HcsPolicy {
  const path = file ?? DEFAULT_POLICY_FILE;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new PolicyError(`POLICY_FILE ${String(path)} cannot be read: ${(err as Error).message}`);
  }
  try {
    return parsePolicy(JSON.parse(text), String(file ?? 'the default policy'));
  } catch (err) {
    if (err instanceof PolicyError) throw err;
    throw new PolicyError(`POLICY_FILE ${String(path)} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Who is asking, as far as the policy is concerned. */
export interface Subject {
  roles: Coding[];
  purposes: string[];
  clearance: string;
  sensitivities: string[];
  breakGlass: boolean;
  patientUser: boolean;
}

export const isEmergency = (policy: HcsPolicy, purpose: string) => policy.emergencyPurposes.includes(purpose);

/** Whether the role matrix lets this subject assert a purpose (is-a: a role allowed TREAT may assert ETREAT). */
function rolesPermit(policy: HcsPolicy, subject: Subject, purpose: string): boolean {
  if (subject.roles.length === 0) return policy.withoutRole.some((allowed) => purposeIsA(purpose, allowed));
  const keys = new Set(subject.roles.map((r) => `${r.system}|${r.code}`));
  return policy.rolePurposes.some((entry) => keys.has(entry.role) && entry.purposes.some((allowed) => purposeIsA(purpose, allowed)));
}

/** For the guard: whether a token's purpose of use is one its roles may assert (IHE PCF role x purpose-of-use). */
export function rolesMayAssert(policy: HcsPolicy, roles: Coding[], purpose: string): boolean {
  return rolesPermit(policy, { roles, purposes: [], clearance: 'N', sensitivities: [], breakGlass: false, patientUser: false }, purpose);
}

/**
 * The purposes of use a subject may assert, in a stable order: their own list (a patient user
 * without one gets the policy's patient default) limited by the role matrix; emergency purposes
 * only for break-glass users, and BTG always offered to them.
 */
export function assertablePurposes(policy: HcsPolicy, subject: Subject): string[] {
  const own = subject.purposes.length ? subject.purposes : subject.patientUser ? [policy.defaultPurpose.patient] : [];
  const candidates = new Set(own);
  if (subject.breakGlass) for (const purpose of policy.emergencyPurposes) candidates.add(purpose);
  return [...candidates].filter((purpose) => {
    if (isEmergency(policy, purpose)) return subject.breakGlass && (purpose === 'BTG' || rolesPermit(policy, subject, purpose));
    return rolesPermit(policy, subject, purpose);
  });
}

/** Who a new user is, as far as their default purposes of use go. */
export interface NewUserKind {
  roles: Coding[];
  patientUser: boolean;
  /** Auditors and privacy officers work for the organization: healthcare operations. */
  operations: boolean;
}

/**
 * The purposes a user created without any gets: a patient the policy's patient default (PATRQT);
 * an auditor or privacy officer HOPERAT; anyone else is a clinician: TREAT and whatever the policy
 * lets their roles assert (emergency purposes never: break-the-glass is its own flag). Only those the
 * policy lets them assert are kept: an empty answer means the user could sign in to no app.
 */
export function defaultUserPurposes(policy: HcsPolicy, kind: NewUserKind): string[] {
  const subject: Subject = { roles: kind.roles, purposes: [], clearance: 'N', sensitivities: [], breakGlass: false, patientUser: kind.patientUser };
  const keys = new Set(kind.roles.map((r) => `${r.system}|${r.code}`));
  const wanted = kind.patientUser ? [policy.defaultPurpose.patient]
    : kind.operations ? ['HOPERAT']
      : ['TREAT', ...policy.rolePurposes.filter((entry) => keys.has(entry.role)).flatMap((entry) => entry.purposes)];
  return assertablePurposes(policy, { ...subject, purposes: [...new Set(wanted)].filter((p) => !isEmergency(policy, p)) });
}

/** The purpose pre-selected on the consent page. */
export function defaultPurpose(policy: HcsPolicy, subject: Subject, options: readonly string[]): string | undefined {
  const preferred = subject.patientUser ? policy.defaultPurpose.patient : policy.defaultPurpose.other;
  return options.includes(preferred) ? preferred : options.find((p) => !isEmergency(policy, p));
}

/** A client's registered purposes limit what its tokens may carry; none registered means no limit from the client. */
export function clientPermits(clientPurposes: readonly string[] | undefined, purpose: string): boolean {
  return !clientPurposes?.length || clientPurposes.some((allowed) => purposeIsA(purpose, allowed));
}

export interface Clearance {
  ceiling: ConfidentialityCode;
  sensitivities: string[];
}

/** The clearance a token carries: the user's, lifted by an emergency purpose as the policy says (never to V). */
export function effectiveClearance(policy: HcsPolicy, subject: Subject, purpose: string | undefined): Clearance {
  const own = isConfidentiality(subject.clearance) ? subject.clearance : 'N';
  if (!purpose || !isEmergency(policy, purpose)) return { ceiling: own, sensitivities: subject.sensitivities };
  // The policy's ceiling is below V (parsePolicy), so only a user cleared for V keeps V.
  const lifted = CONFIDENTIALITY_SCALE[Math.max(confidentialityRank(own), confidentialityRank(policy.breakGlass.ceiling))];
  return {
    ceiling: lifted,
    sensitivities: policy.breakGlass.allSensitivities ? knownSensitivities(policy.labels) : subject.sensitivities,
  };
}

/** Whether the policy makes a subject with these roles sign in with a second factor. */
export function rolesRequireSecondFactor(policy: HcsPolicy, roles: readonly Coding[]): boolean {
  return roles.some((r) => policy.secondFactorRoles.includes(`${r.system}|${r.code}`));
}

/** What discovery advertises: every purpose of use and every role the policy names. */
export function policyVocabulary(policy: HcsPolicy): { purposes: string[]; roles: Coding[] } {
  const purposes = new Set([
    ...policy.rolePurposes.flatMap((entry) => entry.purposes), ...policy.withoutRole, ...policy.emergencyPurposes,
    policy.defaultPurpose.patient, policy.defaultPurpose.other,
  ]);
  const roles = policy.rolePurposes.map((entry) => {
    const bar = entry.role.lastIndexOf('|');
    return { system: entry.role.slice(0, bar), code: entry.role.slice(bar + 1) };
  });
  return { purposes: [...purposes], roles };
}
