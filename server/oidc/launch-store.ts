// Launch context storage: EHR launch ids (single use) and the context bound to each grant.
import { randomBytes } from 'node:crypto';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import type { FhirContextItem, LaunchContext } from '../smart/launch-context.ts';

export interface EhrLaunch {
  id: string;
  patient: string;
  encounter: string | null;
  clientId: string | null;
  /** The user (users.id) the launch is for; null: whoever signs in (and may open the patient). */
  userId: string | null;
  fhirContext: FhirContextItem[];
}

export async function createEhrLaunch(
  db: Db,
  launch: { patient: string; encounter?: string; clientId?: string; userId?: string; fhirContext?: FhirContextItem[] },
  ttlSeconds: number,
): Promise<string> {
  const id = randomBytes(24).toString('base64url');
  await db('ehr_launches').insert({
    id,
    patient: launch.patient,
    encounter: launch.encounter ?? null,
    client_id: launch.clientId ?? null,
    user_id: launch.userId ?? null,
    fhir_context: launch.fhirContext?.length ? JSON.stringify(launch.fhirContext) : null,
    expires_at: nowSeconds() + ttlSeconds,
  });
  return id;
}

/** An EHR launch that has not expired and has not been used. */
export async function findEhrLaunch(db: Db, id: string): Promise<EhrLaunch | undefined> {
  const row = await db('ehr_launches')
    .where('id', id)
    .whereNull('consumed_at')
    .andWhere('expires_at', '>', nowSeconds())
    .first();
  return row && {
    id: row.id,
    patient: row.patient,
    encounter: row.encounter,
    clientId: row.client_id,
    userId: row.user_id ?? null,
    fhirContext: row.fhir_context ? JSON.parse(row.fhir_context) : [],
  };
}

/**
 * An EHR launch `userId` may sign in with: unexpired, unused, and made for them or for nobody in particular.
 * One made for another user is to them as one that does not exist.
 */
export async function findEhrLaunchFor(db: Db, id: string, userId: string): Promise<EhrLaunch | undefined> {
  const launch = await findEhrLaunch(db, id);
  return launch && (launch.userId === null || launch.userId === userId) ? launch : undefined;
}

/**
 * Marks the launch used by `userId` and returns it; undefined when it was already used, has expired or is
 * another user's (left unused then). One winner under races.
 */
export async function consumeEhrLaunch(db: Db, id: string, userId: string): Promise<EhrLaunch | undefined> {
  const launch = await findEhrLaunchFor(db, id, userId);
  if (!launch) return undefined;
  const updated = await db('ehr_launches').where('id', id).whereNull('consumed_at').update({ consumed_at: nowSeconds() });
  return updated === 1 ? launch : undefined;
}

/** Takes back a launch nobody was told of (its creation could not be recorded). */
export async function deleteEhrLaunch(db: Db, id: string): Promise<void> {
  await db('ehr_launches').where('id', id).delete();
}

/** Removes launches past their expiry, used or not: none can be used any more. */
export async function purgeExpiredEhrLaunches(db: Db): Promise<number> {
  return db('ehr_launches').where('expires_at', '<', nowSeconds()).delete();
}

export interface GrantContext {
  launch: LaunchContext;
  purposeOfUse?: string;
  /** Set when the purpose is an emergency override (break-the-glass): the user's written reason. */
  emergencyReason?: string;
  /** How the user proved who they are again for this authorization (break-the-glass step-up): amr values. */
  stepUpAmr?: string[];
  /** Demo mode only: the failure a sandbox launch simulates at the token endpoint or at /fhir (server/sandbox.ts). */
  sandboxFailure?: string;
}

export async function saveGrantContext(db: Db, grantId: string, context: GrantContext, ttlSeconds: number): Promise<void> {
  await db('grant_contexts')
    .insert({
      grant_id: grantId,
      launch: JSON.stringify(context.launch),
      purpose_of_use: context.purposeOfUse ?? null,
      emergency_reason: context.emergencyReason ?? null,
      step_up_amr: context.stepUpAmr?.join(' ') ?? null,
      sandbox_failure: context.sandboxFailure ?? null,
      expires_at: nowSeconds() + ttlSeconds,
    })
    .onConflict('grant_id')
    .merge();
}

export async function findGrantContext(db: Db, grantId: string): Promise<GrantContext | undefined> {
  const row = await db('grant_contexts').where('grant_id', grantId).andWhere('expires_at', '>', nowSeconds())
    .first('launch', 'purpose_of_use', 'emergency_reason', 'step_up_amr', 'sandbox_failure');
  return row ? toGrantContext(row) : undefined;
}

export interface GrantContextRow {
  launch: string;
  purpose_of_use: string | null;
  emergency_reason: string | null;
  step_up_amr?: string | null;
  sandbox_failure?: string | null;
}

/** A live `grant_contexts` row as a GrantContext. */
export function toGrantContext(row: GrantContextRow): GrantContext {
  return {
    launch: JSON.parse(row.launch) as LaunchContext,
    ...(row.purpose_of_use && { purposeOfUse: row.purpose_of_use }),
    ...(row.emergency_reason && { emergencyReason: row.emergency_reason }),
    ...(row.step_up_amr && { stepUpAmr: row.step_up_amr.split(' ') }),
    ...(row.sandbox_failure && { sandboxFailure: row.sandbox_failure }),
  };
}

/** Removes grant contexts past their expiry: nothing reads them any more (a grant ended earlier took its row along). */
export async function purgeExpiredGrantContexts(db: Db): Promise<number> {
  return db('grant_contexts').where('expires_at', '<', nowSeconds()).delete();
}

export async function deleteGrantContext(db: Db, grantId: string): Promise<void> {
  await db('grant_contexts').where('grant_id', grantId).delete();
}
