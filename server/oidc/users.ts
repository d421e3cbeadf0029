// Users: the people who log in. Stored in the database; the CLI and the login page share this module.
import { randomUUID } from 'node:crypto';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import { DUMMY_HASH, hashPassword, verifyPassword } from './passwords.ts';
import type { Subject } from '../hcs/policy.ts';
import { isPrivacyOfficerRole, PRIVACY_OFFICER } from '../hcs/codes.ts';
import { endUserAccess } from '../auth/sessions.ts';
import { passwordProblem } from '../auth/password-policy.ts';
import { patientOf, toUser, type Coding, type User, type UserAttributes, type UserRow } from './user-records.ts';

export { findUser, patientOf, toUser, type Coding, type User, type UserAttributes, type UserRow } from './user-records.ts';

export interface NewUser {
  username: string;
  password: string;
  name?: string;
  fhirUser?: string;
  attributes?: UserAttributes;
}

export class UserError extends Error {
  override name = 'UserError';
}

const FHIR_USER = /^(Patient|Practitioner|PractitionerRole|RelatedPerson|Person)\/[A-Za-z0-9\-.]{1,64}$/;

/** Throws a UserError when the username, password or fhirUser is not acceptable. */
export function checkNewUser(user: Pick<NewUser, 'username' | 'password' | 'fhirUser'>): void {
  if (!/^[A-Za-z0-9._@-]{1,64}$/.test(user.username)) throw new UserError('username: 1-64 letters, digits, . _ @ -');
  if (user.password.length < 8) throw new UserError('password: at least 8 characters');
  if (user.fhirUser && !FHIR_USER.test(user.fhirUser)) {
    throw new UserError('fhir-user: a relative reference such as Practitioner/123 or Patient/123');
  }
}

/** Adds a user; `hash` makes the stored password hash (scrypt, see passwords.ts). */
export async function addUser(db: Db, user: NewUser, hash: (password: string) => Promise<string> = hashPassword): Promise<User> {
  checkNewUser(user);
  if (await db('users').where('username', user.username).first('id')) throw new UserError(`user ${user.username} exists`);
  const row = {
    id: randomUUID(),
    username: user.username,
    password_hash: await hash(user.password),
    name: user.name ?? null,
    fhir_user: user.fhirUser ?? null,
    attributes: JSON.stringify(user.attributes ?? {}),
    disabled: false,
    created_at: nowSeconds(),
  };
  await db('users').insert(row);
  return toUser(row);
}

export async function findUserByUsername(db: Db, username: string): Promise<User | undefined> {
  const row = await db('users').where('username', username).first();
  return row ? toUser(row) : undefined;
}

export async function listUsers(db: Db): Promise<User[]> {
  return (await db('users').orderBy('username')).map(toUser);
}

/** Disables a user and ends their sessions and grants at once. */
export async function disableUser(db: Db, username: string): Promise<boolean> {
  const row = await db('users').where('username', username).first('id');
  if (!row) return false;
  await db('users').where('id', row.id).update({ disabled: true });
  await endUserAccess(db, row.id);
  return true;
}

/**
 * The hash to store for a new password of `user`, once it passes the password policy (else a UserError).
 * scrypt takes about 0.15 s: make it before opening a transaction, which on SQLite holds the write lock.
 */
export async function newPasswordHash(user: Pick<User, 'username'>, password: string): Promise<string> {
  const problem = passwordProblem(password, user.username);
  if (problem) throw new UserError(problem);
  return hashPassword(password);
}

/**
 * Stores a new password's hash (newPasswordHash) and ends every session but `exceptSession` and every
 * grant of the user: whoever knew the old one is out.
 */
export async function storePasswordHash(db: Db, user: User, passwordHash: string, exceptSession?: string): Promise<void> {
  await db('users').where('id', user.id).update({ password_hash: passwordHash });
  await endUserAccess(db, user.id, exceptSession);
}

/** Sets a new password (it must pass the password policy): newPasswordHash, then storePasswordHash. */
export async function setPassword(db: Db, user: User, password: string, exceptSession?: string): Promise<void> {
  await storePasswordHash(db, user, await newPasswordHash(user, password), exceptSession);
}

/**
 * The user for a username and password, or undefined. An unknown user, a wrong
 * password and a disabled account take the same time and give the same answer.
 */
export async function authenticate(db: Db, username: string, password: string): Promise<User | undefined> {
  const row: UserRow | undefined = await db('users').where('username', username).first();
  const ok = await verifyPassword(password, row?.password_hash ?? DUMMY_HASH);
  if (!row || !ok || row.disabled) return undefined;
  return toUser(row);
}

/** Whether a user may pick and reach this patient. */
export function mayAccessPatient(user: User, patientId: string): boolean {
  const own = patientOf(user);
  if (own) return own === patientId;
  return !user.attributes.patients || user.attributes.patients.includes(patientId);
}

/** The user's roles; the privacy-officer role only from the privacyOfficer attribute, never from a stored role. */
function rolesOf(user: User): Coding[] {
  const roles = (user.attributes.roles ?? []).filter((role) => !isPrivacyOfficerRole(role));
  return user.attributes.privacyOfficer ? [...roles, PRIVACY_OFFICER] : roles;
}

/** The user as the HCS policy sees them. */
export function subjectOf(user: User): Subject {
  return {
    roles: rolesOf(user),
    purposes: user.attributes.purposes ?? [],
    clearance: user.attributes.clearance ?? 'N',
    sensitivities: user.attributes.sensitivities ?? [],
    breakGlass: Boolean(user.attributes.breakGlass),
    patientUser: Boolean(patientOf(user)),
  };
}

