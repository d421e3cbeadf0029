// Which purpose of use an authorization may carry: what the user may assert, limited by the app's
// registration, and what the app asked for up front (a `purpose_of_use` scope token or parameter). Pure.
import { ACT_REASON, isPurposeOfUse, isTestPurpose } from './codes.ts';
import { assertablePurposes, clientPermits, defaultPurpose, isEmergency, type HcsPolicy, type Subject } from './policy.ts';

/** The v3-ActReason OID, as UDAP and IHE XUA write the system. */
const ACT_REASON_OID = 'urn:oid:2.16.840.1.113883.5.8';

/** Whether `system`/`code` names a v3-ActReason purpose of use (the system as a URI or an OID). */
export function isActReasonPurpose(system: string, code: string): boolean {
  return (system === ACT_REASON || system === ACT_REASON_OID) && isPurposeOfUse(code);
}

/**
 * The purpose an app asked for: `purpose_of_use=<system>|<code>` scope tokens and a `purpose_of_use`
 * parameter (`<code>` or `<system>|<code>`). More than one distinct purpose is an error.
 */
export function requestedPurpose(scope: string, parameter: unknown): { code?: string; error?: string } {
  const values = scope.split(' ').filter((t) => t.startsWith('purpose_of_use=')).map((t) => t.slice('purpose_of_use='.length));
  if (typeof parameter === 'string' && parameter) values.push(parameter);
  const codes = new Set<string>();
  for (const value of values) {
    const bar = value.lastIndexOf('|');
    const system = bar >= 0 ? value.slice(0, bar) : ACT_REASON;
    const code = bar >= 0 ? value.slice(bar + 1) : value;
    if (!isActReasonPurpose(system, code)) {
      return { error: `purpose_of_use ${value} is not a v3-ActReason purpose of use` };
    }
    codes.add(code);
  }
  if (codes.size > 1) return { error: 'a token carries exactly one purpose of use; the request names several' };
  return { code: [...codes][0] };
}

/**
 * Why an app may not ask for this purpose up front (an invalid_request), or undefined: it is not one
 * purpose of use, or it is an emergency, which only the person can choose.
 */
export function requestedPurposeError(policy: HcsPolicy, requested: { code?: string; error?: string }): string | undefined {
  if (requested.error) return requested.error;
  if (requested.code && isEmergency(policy, requested.code)) return `an app cannot ask for ${requested.code}: only the person can choose an emergency access`;
  return undefined;
}

export interface PurposeChoice {
  /** What the person may pick from (a single fixed entry when the app asked for one). */
  options: string[];
  preselected?: string;
  /** The app asked for this one: it is not for the person to change. */
  fixedByApp: boolean;
  /** Options that are an emergency override and need a written reason. */
  emergency: string[];
  /** Why the authorization cannot go on, as an OAuth error for the app. */
  error?: { code: 'invalid_request' | 'access_denied'; description: string };
}

const refused = (code: 'invalid_request' | 'access_denied', description: string): PurposeChoice =>
  ({ options: [], fixedByApp: false, emergency: [], error: { code, description } });

export function purposeChoice(input: {
  policy: HcsPolicy;
  subject: Subject;
  clientPurposes?: readonly string[];
  /** From requestedPurpose(). */
  requested?: { code?: string; error?: string };
}): PurposeChoice {
  const error = input.requested && requestedPurposeError(input.policy, input.requested);
  if (error) return refused('invalid_request', error);
  return choose({ ...input, requested: input.requested?.code });
}

function choose(input: {
  policy: HcsPolicy;
  subject: Subject;
  clientPurposes?: readonly string[];
  requested?: string;
}): PurposeChoice {
  const { policy, subject, clientPurposes, requested } = input;
  const options = assertablePurposes(policy, subject).filter((p) => clientPermits(clientPurposes, p));
  const emergency = options.filter((p) => isEmergency(policy, p));
  if (requested) {
    if (!options.includes(requested)) return refused('access_denied', `purpose of use ${requested} is not permitted for this user and app`);
    return { options: [requested], preselected: requested, fixedByApp: true, emergency: [] };
  }
  if (!options.length) return refused('access_denied', 'no purpose of use is permitted for this user and app');
  return { options, preselected: defaultPurpose(policy, subject, options), fixedByApp: false, emergency };
}

/** Checks a submitted consent's purpose and emergency reason; returns the error to show, or undefined. */
export function checkPurposeSubmission(choice: PurposeChoice, purpose: string, reason: string): string | undefined {
  if (!choice.options.includes(purpose)) return 'Choose one of the purposes of use listed.';
  if (choice.emergency.includes(purpose) && reason.trim().length < 10) {
    return 'Emergency access (break the glass) needs a written reason of at least 10 characters.';
  }
  if (reason.length > 2000) return 'The reason is too long (at most 2000 characters).';
  return undefined;
}

/** Whether the person may open test patients at all: one of their options is-a HTEST. */
export const mayOpenTestData = (choice: PurposeChoice) => choice.options.some(isTestPurpose);

/**
 * The purpose to preselect for a patient: the usual one if the patient's record is visible under it,
 * else the first (non-emergency first) under which it is; `visible: false` when none is.
 */
export function purposeForPatient(choice: PurposeChoice, patient: { test: boolean }): { preselected?: string; visible: boolean } {
  const shows = (purpose: string) => isTestPurpose(purpose) === patient.test;
  const candidates = choice.options.filter(shows);
  if (!candidates.length) return { preselected: choice.preselected, visible: false };
  if (choice.preselected && shows(choice.preselected)) return { preselected: choice.preselected, visible: true };
  return { preselected: candidates.find((p) => !choice.emergency.includes(p)) ?? candidates[0], visible: true };
}
