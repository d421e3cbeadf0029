// What a guard must know about a token's user beyond the token: the patients the user may reach with
// `user/` scopes (`--patients`) and whether they may read the audit trail (`--auditor`). The authorization
// server's database tells it (sharedDatabase), or smart-auth's introspection answer in two extension
// members (RFC 7662 section 2.2), written and read here. What nobody told is the narrowest: fail closed.

export interface UserFacts {
  /** The patients `user/` scopes reach; undefined means every patient. */
  patients?: readonly string[];
  auditor: boolean;
}

/** `user_patients` of an unrestricted user: every patient (no FHIR id is `*`). */
const EVERY_PATIENT = '*';

/** The user a token was issued for: its `sub`, unless that is the client itself (a backend service). */
export function tokenUser(claims: Record<string, unknown>): string | undefined {
  return typeof claims.sub === 'string' && claims.sub !== claims.client_id ? claims.sub : undefined;
}

/** The introspection answer's members for a user: `user_patients` (ids, or "*") and `auditor`. */
export function userFactsMembers(facts: UserFacts): { user_patients: readonly string[] | typeof EVERY_PATIENT; auditor: boolean } {
  return { user_patients: facts.patients ?? EVERY_PATIENT, auditor: facts.auditor };
}

/**
 * The user facts an introspection answer tells (undefined: there was none). Missing or malformed members,
 * as from another authorization server, tell nothing: no patient through `user/` scopes, no audit trail.
 */
export function userFactsOf(answer: Record<string, unknown> | undefined): UserFacts {
  const listed = answer?.user_patients;
  const patients = listed === EVERY_PATIENT ? undefined
    : Array.isArray(listed) && listed.every((id) => typeof id === 'string') ? listed as string[] : [];
  return { patients, auditor: answer?.auditor === true };
}
