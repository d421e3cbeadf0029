// The apps a person has granted access to, and revoking them (SMART management_endpoint).
import type Provider from 'oidc-provider';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import { findGrantContext } from './launch-store.ts';
import { noteRevocation, revokeClientTokens } from './revocation.ts';

export interface GrantSummary {
  grantId: string;
  clientId: string;
  clientName: string;
  scope: string;
  patient?: string;
  grantedAt: number;
  expiresAt: number | null;
}

interface GrantPayload {
  clientId: string;
  accountId: string;
  iat?: number;
  exp?: number;
  openid?: { scope?: string };
  resources?: Record<string, string>;
}

export async function grantsOf(db: Db, provider: Provider, accountId: string): Promise<GrantSummary[]> {
  const rows: { id: string; payload: string }[] = await db('oidc_payloads')
    .where({ model: 'Grant', account_id: accountId })
    .andWhere((q) => q.whereNull('expires_at').orWhere('expires_at', '>', nowSeconds()))
    .select('id', 'payload');
  const summaries = await Promise.all(rows.map(async ({ id, payload }) => {
    const grant = JSON.parse(payload) as GrantPayload;
    const client = await provider.Client.find(grant.clientId);
    const scopes = new Set([...(grant.openid?.scope?.split(' ') ?? []), ...Object.values(grant.resources ?? {}).flatMap((s) => s.split(' '))]);
    const context = (await findGrantContext(db, id))?.launch;
    return {
      grantId: id,
      clientId: grant.clientId,
      clientName: client?.clientName ?? grant.clientId,
      scope: [...scopes].filter(Boolean).join(' '),
      patient: context?.patient,
      grantedAt: grant.iat ?? 0,
      expiresAt: grant.exp ?? null,
    };
  }));
  return summaries.sort((a, b) => b.grantedAt - a.grantedAt);
}

/** Repeated grants of one app for one patient, shown and revoked as one. */
export interface MergedGrant {
  grantIds: string[];
  clientId: string;
  clientName: string;
  /** Every scope any of the grants holds. */
  scope: string;
  patient?: string;
  count: number;
  firstGrantedAt: number;
  lastGrantedAt: number;
  /** The latest end of any of them; null when one does not end. */
  expiresAt: number | null;
}

/** Merges grants of one client for one patient (newest first, as grantsOf returns them). Pure. */
export function mergeRepeatedGrants(grants: readonly GrantSummary[]): MergedGrant[] {
  const merged = new Map<string, MergedGrant>();
  for (const g of grants) {
    const key = JSON.stringify([g.clientId, g.patient ?? null]);
    const m = merged.get(key);
    if (!m) {
      merged.set(key, {
        grantIds: [g.grantId], clientId: g.clientId, clientName: g.clientName, scope: g.scope, patient: g.patient,
        count: 1, firstGrantedAt: g.grantedAt, lastGrantedAt: g.grantedAt, expiresAt: g.expiresAt,
      });
      continue;
    }
    m.grantIds.push(g.grantId);
    m.scope = [...new Set([...m.scope.split(' '), ...g.scope.split(' ')])].filter(Boolean).join(' ');
    m.count++;
    m.firstGrantedAt = Math.min(m.firstGrantedAt, g.grantedAt);
    m.lastGrantedAt = Math.max(m.lastGrantedAt, g.grantedAt);
    m.expiresAt = m.expiresAt === null || g.expiresAt === null ? null : Math.max(m.expiresAt, g.expiresAt);
  }
  return [...merged.values()];
}

/** Ends grants: their refresh tokens and codes die at once; their access tokens become inactive (their grant is gone). */
export async function endGrants(db: Db, grantIds: readonly string[]): Promise<void> {
  for (let i = 0; i < grantIds.length; i += 200) {
    const chunk = grantIds.slice(i, i + 200);
    await db('oidc_payloads').whereIn('model', ['RefreshToken', 'AuthorizationCode', 'AccessToken']).whereIn('grant_id', chunk).delete();
    await db('oidc_payloads').where('model', 'Grant').whereIn('id', chunk).delete();
    await db('grant_contexts').whereIn('grant_id', chunk).delete();
  }
  noteRevocation();
}

/** Revokes one of a person's grants; false when it is not theirs. */
export async function revokeGrantOf(db: Db, provider: Provider, accountId: string, grantId: string): Promise<boolean> {
  const grant = await provider.Grant.find(grantId);
  if (!grant || grant.accountId !== accountId) return false;
  await endGrants(db, [grantId]);
  return true;
}

/**
 * Ends a client's access: every grant, and every access token (a backend's have no grant) issued up to
 * `issuedUpTo` (seconds; by default any: a removed client).
 */
export async function endClientAccess(db: Db, clientId: string, issuedUpTo?: number): Promise<number> {
  const rows: { id: string }[] = await db('oidc_payloads').where({ model: 'Grant', client_id: clientId }).select('id');
  await endGrants(db, rows.map((r) => r.id));
  await revokeClientTokens(db, clientId, issuedUpTo);
  return rows.length;
}
