// The read behind a code exchange or a refresh: the code (or refresh token) row, its Grant, the grant's
// launch context and the user, in one statement instead of four. oidc-provider reads the code, then the
// Grant, then calls findAccount; our hooks read the context: each gets its part from RequestFacts.
import type { AdapterPayload } from 'oidc-provider';
import type { Db } from '../../db.ts';
import { nowSeconds } from '../../db.ts';
import { readRows } from '../../db-statements.ts';
import { toGrantContext } from '../launch-store.ts';
import { toUser } from '../users.ts';
import type { GrantSourceFacts } from './request.ts';

/** Models whose rows carry a grant id that the token endpoint then loads. */
export const GRANT_SOURCES = new Set(['AuthorizationCode', 'RefreshToken']);

export interface GrantSourceRow {
  payload: string;
  consumed_at: number | string | null;
}

/** The live row of `model`/`id` and, when it names a live grant, the facts of that grant. */
export async function readGrantSource(db: Db, table: string, model: string, id: string): Promise<{ row?: GrantSourceRow; facts?: GrantSourceFacts }> {
  const now = nowSeconds();
  const [row] = await readRows<any>(db, db(`${table} as s`)
    .leftJoin(`${table} as g`, (j) => j.on('g.id', 's.grant_id').andOnVal('g.model', 'Grant')
      .andOn((live) => live.onNull('g.expires_at').orOnVal('g.expires_at', '>', now)))
    .leftJoin('grant_contexts as c', (j) => j.on('c.grant_id', 's.grant_id').andOnVal('c.expires_at', '>', now))
    .leftJoin('users as u', 'u.id', 'g.account_id')
    .where({ 's.model': model, 's.id': id })
    .andWhere((live) => live.whereNull('s.expires_at').orWhere('s.expires_at', '>', now))
    .first(
      's.payload', 's.consumed_at', 's.grant_id', 'g.payload as grant_payload',
      'c.launch', 'c.purpose_of_use', 'c.emergency_reason', 'c.step_up_amr', 'c.sandbox_failure',
      'u.id as user_id', 'u.username', 'u.name', 'u.fhir_user', 'u.attributes', 'u.disabled',
    ));
  if (!row) return {};
  const source = { payload: row.payload as string, consumed_at: row.consumed_at as GrantSourceRow['consumed_at'] };
  if (!row.grant_id) return { row: source };
  return {
    row: source,
    facts: {
      grantId: row.grant_id,
      grant: row.grant_payload ? (JSON.parse(row.grant_payload) as AdapterPayload) : undefined,
      context: row.launch ? toGrantContext(row) : undefined,
      user: row.user_id ? toUser({ ...row, id: row.user_id }) : undefined,
    },
  };
}
