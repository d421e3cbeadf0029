// node-oidc-provider storage adapter on knex: one table, one row per model instance.
import type { Adapter, AdapterPayload } from 'oidc-provider';
import { errors } from 'oidc-provider';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import { noteRevocation } from './revocation.ts';

const TABLE = 'oidc_payloads';

function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; errno?: number };
  return e.code === '23505' || e.code === 'SQLITE_CONSTRAINT' || e.errno === 19;
}

export function knexAdapterFactory(db: Db) {
  return class KnexAdapter implements Adapter {
    constructor(private readonly model: string) {}

    private live() {
      return db(TABLE)
        .where('model', this.model)
        .andWhere((q) => q.whereNull('expires_at').orWhere('expires_at', '>', nowSeconds()));
    }

    async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
      const row = {
        model: this.model,
        id,
        payload: JSON.stringify(payload),
        grant_id: payload.grantId ?? null,
        uid: payload.uid ?? null,
        user_code: payload.userCode ?? null,
        account_id: this.model === 'Grant' ? (payload.accountId ?? null) : null,
        client_id: this.model === 'Grant' ? (payload.clientId ?? null) : null,
        expires_at: expiresIn ? nowSeconds() + expiresIn : null,
      };
      if (this.model === 'ReplayDetection') {
        // A plain INSERT: the primary key makes "seen this jti" atomic, even across
        // instances. oidc-provider's own check is find-then-save, which races.
        try {
          await db(TABLE).insert(row);
        } catch (err) {
          if (isUniqueViolation(err)) throw new errors.InvalidClientAuth('client assertion tokens must only be used once');
          throw err;
        }
        return;
      }
      await db(TABLE).insert(row).onConflict(['model', 'id']).merge();
    }

    private static parse(row: { payload: string; consumed_at: number | string | null } | undefined): AdapterPayload | undefined {
      if (!row) return undefined;
      const payload = JSON.parse(row.payload) as AdapterPayload;
      return row.consumed_at === null ? payload : { ...payload, consumed: Number(row.consumed_at) };
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      return KnexAdapter.parse(await this.live().andWhere('id', id).first('payload', 'consumed_at'));
    }

    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      return KnexAdapter.parse(await this.live().andWhere('uid', uid).first('payload', 'consumed_at'));
    }

    async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      return KnexAdapter.parse(await this.live().andWhere('user_code', userCode).first('payload', 'consumed_at'));
    }

    async consume(id: string): Promise<void> {
      await db(TABLE).where({ model: this.model, id }).update({ consumed_at: nowSeconds() });
    }

    async destroy(id: string): Promise<void> {
      await db(TABLE).where({ model: this.model, id }).delete();
    }

    async revokeByGrantId(grantId: string): Promise<void> {
      await db(TABLE).where({ model: this.model, grant_id: grantId }).delete();
      noteRevocation();
    }
  };
}

/** Removes expired rows; consumed rows stay until expiry so refresh-token reuse is still detected. */
export async function purgeExpiredPayloads(db: Db): Promise<number> {
  return db(TABLE).where('expires_at', '<', nowSeconds()).delete();
}
