// node-oidc-provider storage adapter on knex: one table, one row per model instance.
import Provider, { errors, type Adapter, type AdapterPayload, type ClientMetadata } from 'oidc-provider';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import { noteRevocation } from './revocation.ts';
import { cachedClient, forgetClient } from './client-cache.ts';
import { ClientError, storeRegisteredClient } from './clients.ts';
import { commitWrite, groupCommitFor } from '../group-commit.ts';
import { firstUse, PAYLOAD_TABLE as TABLE, REPLAYED } from './first-use.ts';
import { currentFacts } from './token/request.ts';
import { GRANT_SOURCES, readGrantSource } from './token/grant-source.ts';


/** ON CONFLICT clause of an upsert: the stored row takes every column of the new one. */
const UPDATED = ['payload', 'grant_id', 'uid', 'user_code', 'account_id', 'client_id', 'expires_at'];
const MERGE = {
  tail: `on conflict (??, ??) do update set ${UPDATED.map(() => '?? = excluded.??').join(', ')}`,
  tailBindings: ['model', 'id', ...UPDATED.flatMap((column) => [column, column])],
};

/** Every access token this server issues is a JWT (see the resource server info in token/scope.ts). */
const JWT_ONLY = new Set(['AccessToken', 'ClientCredentials']);

/** RFC 7592 reads, updates and deletes see the client as stored, never as cached: a secret rotated elsewhere included. */
const MANAGEMENT_ROUTES = new Set(['client', 'client_update', 'client_delete']);
const managingClient = () => MANAGEMENT_ROUTES.has((Provider.ctx as { oidc?: { route?: string } } | undefined)?.oidc?.route ?? '');

/** A registration or a 7592 update: stored unless it would put back a secret rotated out or a client removed meanwhile (409). */
async function storeClientPayload(db: Db, id: string, payload: AdapterPayload): Promise<void> {
  try {
    await storeRegisteredClient(db, id, payload as ClientMetadata, { update: managingClient() });
  } catch (err) {
    if (err instanceof ClientError) throw new errors.InvalidRequest(err.message, 409);
    throw err;
  }
}

/** `clientCacheMs`: how long client metadata read from the database is reused (see client-cache.ts). */
export function knexAdapterFactory(db: Db, { clientCacheMs = 0 }: { clientCacheMs?: number } = {}) {
  const commits = groupCommitFor(db);
  return class KnexAdapter implements Adapter {
    constructor(private readonly model: string) {}

    private live() {
      return db(TABLE)
        .where('model', this.model)
        .andWhere((q) => q.whereNull('expires_at').orWhere('expires_at', '>', nowSeconds()));
    }

    async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
      if (JWT_ONLY.has(this.model)) throw new Error(`${this.model} is issued as a JWT here and never stored`);
      if (this.model === 'Client') return storeClientPayload(db, id, payload);
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
        // At the token endpoint, stored with the answer's other writes, which it guards (token/request.ts).
        const facts = currentFacts(db);
        if (facts?.holdsWrites) return facts.firstUse(row);
        if (!(await commits.submit(firstUse, row))) throw new errors.InvalidClientAuth(REPLAYED);
        return;
      }
      // At the token endpoint (a refresh token), committed with the answer's other writes.
      const facts = currentFacts(db);
      if (facts?.holdsWrites) return facts.write({ table: TABLE, row, ...MERGE });
      await db(TABLE).insert(row).onConflict(['model', 'id']).merge();
    }

    private static parse(row: { payload: string; consumed_at: number | string | null } | undefined): AdapterPayload | undefined {
      if (!row) return undefined;
      const payload = JSON.parse(row.payload) as AdapterPayload;
      return row.consumed_at === null ? payload : { ...payload, consumed: Number(row.consumed_at) };
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      // oidc-provider looks a jti up before saving it; the insert alone decides (see firstUse).
      if (this.model === 'ReplayDetection') return undefined;
      // Introspection looks an opaque token up as each kind in turn; access tokens are JWTs, never stored.
      if (JWT_ONLY.has(this.model)) return undefined;
      if (this.model === 'Client') return managingClient() ? this.findStored(id) : cachedClient(db, id, clientCacheMs, () => this.findStored(id));
      const facts = currentFacts(db);
      if (facts && this.model === 'Grant') {
        const { known, grant } = facts.takeGrant(id);
        if (known) return grant;
      }
      if (facts && GRANT_SOURCES.has(this.model)) {
        const source = await readGrantSource(db, TABLE, this.model, id);
        if (source.facts) facts.learn(source.facts);
        return KnexAdapter.parse(source.row);
      }
      return this.findStored(id);
    }

    private async findStored(id: string): Promise<AdapterPayload | undefined> {
      return KnexAdapter.parse(await this.live().andWhere('id', id).first('payload', 'consumed_at'));
    }

    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      return KnexAdapter.parse(await this.live().andWhere('uid', uid).first('payload', 'consumed_at'));
    }

    async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      return KnexAdapter.parse(await this.live().andWhere('user_code', userCode).first('payload', 'consumed_at'));
    }

    async consume(id: string): Promise<void> {
      // At the token endpoint, once only and with the answer's other writes, which it guards (token/request.ts).
      const facts = currentFacts(db);
      if (facts?.holdsWrites) return facts.consume({ model: this.model, id, at: nowSeconds() });
      await commitWrite(db, db(TABLE).where({ model: this.model, id }).update({ consumed_at: nowSeconds() }));
    }

    async destroy(id: string): Promise<void> {
      await db(TABLE).where({ model: this.model, id }).delete();
      if (this.model === 'Client') forgetClient(db, id);
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
