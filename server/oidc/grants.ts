// The apps a person has granted access to, and revoking them (SMART management_endpoint).
import type Provider from 'oidc-provider';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import { deleteLaunchContext, findLaunchContext } from './launch-store.ts';

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
    const context = await findLaunchContext(db, id);
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

/**
 * Revokes one of a person's grants: its refresh tokens and codes die at once, its access tokens
 * become inactive at introspection (and at the bundled FHIR server) because their grant is gone.
 * Returns false when the grant is not this person's.
 */
export async function revokeGrantOf(db: Db, provider: Provider, accountId: string, grantId: string): Promise<boolean> {
  const grant = await provider.Grant.find(grantId);
  if (!grant || grant.accountId !== accountId) return false;
  for (const model of ['RefreshToken', 'AuthorizationCode', 'AccessToken', 'Grant'] as const) {
    await db('oidc_payloads').where({ model, grant_id: grantId }).delete();
  }
  await grant.destroy();
  await deleteLaunchContext(db, grantId);
  return true;
}
