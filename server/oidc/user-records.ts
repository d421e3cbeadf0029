// A user as the guard needs to know it: read from the authorization server's `users` table, by a
// process that shares its database (the bundled /fhir, the guard proxy, the guard package). Nothing here
// writes, hashes or checks a password (users.ts does).
import type { Db } from '../db.ts';

export interface Coding {
  system: string;
  code: string;
  display?: string;
}

/** Security attributes (HCS): who the user is for access decisions. */
export interface UserAttributes {
  roles?: Coding[];
  purposes?: string[];
  clearance?: string;
  sensitivities?: string[];
  breakGlass?: boolean;
  auditor?: boolean;
  /** May write Consent and lower or remove security labels: the PRIVACY_OFFICER role in tokens. */
  privacyOfficer?: boolean;
  organization?: string;
  /** A URI (or urn:oid:) for the organization: IUA subject_organization_id. */
  organizationId?: string;
  /** Patient ids a clinician may pick and reach; absent means all. */
  patients?: string[];
  /** Must sign in with a second factor (TOTP or passkey); led to enrol one when they have none. */
  requireMfa?: boolean;
}

export interface User {
  id: string;
  username: string;
  name: string | null;
  fhirUser: string | null;
  attributes: UserAttributes;
  disabled: boolean;
}

export interface UserRow {
  id: string;
  username: string;
  password_hash: string;
  name: string | null;
  fhir_user: string | null;
  attributes: string;
  disabled: number | boolean;
}

/** A `users` row as a User (`password_hash` is not needed). */
export const toUser = (row: Omit<UserRow, 'password_hash'>): User => ({
  id: row.id,
  username: row.username,
  name: row.name,
  fhirUser: row.fhir_user,
  attributes: JSON.parse(row.attributes) as UserAttributes,
  disabled: Boolean(row.disabled),
});

export async function findUser(db: Db, id: string): Promise<User | undefined> {
  const row = await db('users').where('id', id).first();
  return row ? toUser(row) : undefined;
}

/** The patient a patient user is, if the user is one. */
export function patientOf(user: User): string | undefined {
  return user.fhirUser?.startsWith('Patient/') ? user.fhirUser.slice('Patient/'.length) : undefined;
}

/**
 * For the guard: the patients a user may reach with `user/` scopes. Undefined means all (a clinician
 * without a list); a patient user reaches their own record only; a disabled user reaches none.
 */
export function reachablePatients(user: User): readonly string[] | undefined {
  if (user.disabled) return [];
  const own = patientOf(user);
  return own ? [own] : user.attributes.patients;
}

/** For the guard: whether a user may read the audit trail beyond their own record (`--auditor`). */
export const isAuditor = (user: User): boolean => Boolean(user.attributes.auditor) && !user.disabled;
