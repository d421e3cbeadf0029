// "Seen this jti before?" answered by the database: a client assertion's or a DPoP proof's jti is
// stored once in oidc_payloads. The primary key makes it atomic, also across instances (oidc-provider's
// own check is find-then-save, which races), and group commit lets concurrent requests share one
// transaction. Within a batch the first wins.
import type { Db } from '../db.ts';
import { groupCommitFor, type WriteKind } from '../group-commit.ts';
import { insertValues } from '../db-statements.ts';

export const PAYLOAD_TABLE = 'oidc_payloads';

export const REPLAYED = 'client assertion tokens must only be used once';

export type PayloadRow = Record<string, unknown> & { model: string; id: string };

/** Stores each row's id once and tells which were new; a guard: token writes depend on it (RequestFacts). */
export const firstUse: WriteKind<PayloadRow, boolean> = {
  guard: 1,
  async write({ q, rows: run }, rows) {
    const first = new Map<string, number>();
    rows.forEach((row, i) => { if (!first.has(row.id)) first.set(row.id, i); });
    const fresh = [...first.values()].map((i) => rows[i]);
    const inserted = await run<{ id: string }>(insertValues(q, PAYLOAD_TABLE, fresh, 'on conflict (??, ??) do nothing returning ??', ['model', 'id', 'id']));
    const stored = new Set(inserted.map((r) => r.id));
    return { outcomes: rows.map((row, i) => first.get(row.id) === i && stored.has(row.id)) };
  },
};

/** A code or refresh token to mark consumed at `at` (epoch seconds). */
export interface Consumption {
  model: string;
  id: string;
  at: number;
}

export const CONSUMED = 'authorization code or refresh token already used';

/**
 * Marks codes and refresh tokens consumed and tells which were not consumed yet: single use made atomic
 * (oidc-provider reads the code, then consumes it; two requests with one code could both read it unused).
 * A guard after the jtis: a request with a replayed assertion consumes nothing; the token writes of the
 * request depend on it (RequestFacts).
 */
export const consumedOnce: WriteKind<Consumption, boolean> = {
  guard: 2,
  async write({ q, rows }, items) {
    const key = (c: Consumption) => `${c.model}\0${c.id}`;
    const first = new Map<string, number>();
    items.forEach((item, i) => { if (!first.has(key(item))) first.set(key(item), i); });
    const byModel = new Map<string, Consumption[]>();
    for (const i of first.values()) byModel.set(items[i].model, [...(byModel.get(items[i].model) ?? []), items[i]]);
    const consumed = new Set<string>();
    for (const [model, list] of byModel) {
      const updated = await rows<{ id: string }>(q(PAYLOAD_TABLE).where('model', model).whereIn('id', list.map((c) => c.id))
        .whereNull('consumed_at').update({ consumed_at: list[0].at }, ['id']));
      for (const row of updated) consumed.add(`${model}\0${row.id}`);
    }
    return { outcomes: items.map((item, i) => first.get(key(item)) === i && consumed.has(key(item))) };
  },
};

/**
 * Records `id` under `model` until `expiresAt` (epoch seconds), once: true when it was new. Atomic across
 * instances sharing the database, like the client assertion jtis (the DPoP proof jtis of the bundled guard).
 */
export function recordFirstUse(db: Db, model: string, id: string, expiresAt: number): Promise<boolean> {
  const row = { model, id, payload: '{}', grant_id: null, uid: null, user_code: null, account_id: null, client_id: null, expires_at: Math.ceil(expiresAt) };
  return groupCommitFor(db).submit(firstUse, row);
}
