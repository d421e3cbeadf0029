// What one request to oidc-provider knows and writes, in one object shared by every hook of that request
// (findAccount, the resource and TTL hooks, the token claims, the token response):
//   - facts, each read at most once: the grant's launch context and the user. At the token endpoint the
//     adapter reads them with the code or refresh token, in one statement (grant-source.ts);
//   - at the token endpoint, its writes (the client assertion's jti, consuming the code or refresh token,
//     the new refresh token, linking the token to its grant): they are held until the answer and committed
//     in one group-commit wait with its audit record, the jti and the consumption guarding the rest (commit()).
import type { Knex } from 'knex';
import Provider, { errors, type AdapterPayload } from 'oidc-provider';
import type { Db } from '../../db.ts';
import { commitInsert, commitWrite, groupCommitFor, type RowInsert } from '../../group-commit.ts';
import { CONSUMED, consumedOnce, firstUse, REPLAYED, type Consumption, type PayloadRow } from '../first-use.ts';
import { findGrantContext, type GrantContext } from '../launch-store.ts';
import { endGrants } from '../grants.ts';
import { findUser, type User } from '../users.ts';
import type { IheIua } from '../../hcs/token-claims.ts';

/** What the adapter read along with a code or refresh token (grant-source.ts). */
export interface GrantSourceFacts {
  grantId: string;
  /** The stored Grant; undefined when it is gone or expired. */
  grant: AdapterPayload | undefined;
  context: GrantContext | undefined;
  user: User | undefined;
}

export class RequestFacts {
  /** The IHE IUA attributes of the client assertion's hl7-b2b extension, parsed once when it was checked. */
  b2b: IheIua | undefined;
  /** What was read with the request's code or refresh token, if anything (kept also when the request is refused). */
  source: GrantSourceFacts | undefined;
  private readonly reads = new Map<string, Promise<unknown>>();
  private readonly grants = new Map<string, AdapterPayload | undefined>();
  private held: (Knex.QueryBuilder | RowInsert)[] | undefined;
  private firstUses: PayloadRow[] = [];
  private consumptions: Consumption[] = [];

  constructor(private readonly db: Db) {}

  /** The grant's launch context (undefined without a grant id). */
  grantContext(grantId: string | undefined): Promise<GrantContext | undefined> {
    return grantId ? this.once(`grant:${grantId}`, () => findGrantContext(this.db, grantId)) : Promise.resolve(undefined);
  }

  /** A user (undefined without an id). */
  user(id: string | undefined): Promise<User | undefined> {
    return id ? this.once(`user:${id}`, () => findUser(this.db, id)) : Promise.resolve(undefined);
  }

  /** Keeps what was read with a code or refresh token, for the hooks that follow. */
  learn(facts: GrantSourceFacts): void {
    this.source = facts;
    this.grants.set(facts.grantId, facts.grant);
    this.reads.set(`grant:${facts.grantId}`, Promise.resolve(facts.context));
    if (facts.user) this.reads.set(`user:${facts.user.id}`, Promise.resolve(facts.user));
  }

  /** The Grant read with this request's code or refresh token, once; `known` false when there was none. */
  takeGrant(id: string): { known: boolean; grant?: AdapterPayload } {
    if (!this.grants.has(id)) return { known: false };
    const grant = this.grants.get(id);
    this.grants.delete(id);
    return { known: true, grant };
  }

  /** From now on writes wait for commit() (the token endpoint's middleware calls this first). */
  holdWrites(): void {
    this.held ??= [];
  }

  get holdsWrites(): boolean {
    return this.held !== undefined;
  }

  /** A jti (client assertion, DPoP proof) to store once; commit() writes the rest only if every one was new. */
  firstUse(row: PayloadRow): void {
    this.firstUses.push(row);
  }

  /** A code or refresh token to consume once; commit() writes the rest only if it was still unused. */
  consume(consumption: Consumption): void {
    this.consumptions.push(consumption);
  }

  /** Commits `write` (a query, or a row to insert with the batch's others) with the request's other writes when they are held, at once otherwise. */
  write(write: Knex.QueryBuilder | RowInsert): Promise<void> {
    if (!this.held) return this.submit(write);
    this.held.push(write);
    return Promise.resolve();
  }

  private submit(write: Knex.QueryBuilder | RowInsert): Promise<void> {
    return 'table' in write && 'row' in write ? commitInsert(this.db, write as RowInsert) : commitWrite(this.db, write as Knex.QueryBuilder);
  }

  /**
   * Submits the request's jtis, its held writes and `also` (writes to the same group commit, such as an
   * audit record, that submit synchronously) together, so that they share one transaction, in which the
   * writes are made only if every jti was new and the code or refresh token still unused. Resolves once
   * all are committed; rejects with invalid_client when a jti was used before, invalid_grant when the code
   * or refresh token was (ending its grant), and with the store's error when a write fails.
   */
  async commit(also: () => Promise<unknown>[] = () => []): Promise<void> {
    const held = this.held ?? [];
    this.held = undefined;
    const jtis = this.firstUses.splice(0);
    const consumptions = this.consumptions.splice(0);
    const { guards: [jtisNew, unused], dependents } = groupCommitFor(this.db).submitGuarded(
      [jtis.map((row) => [firstUse, row] as const), consumptions.map((c) => [consumedOnce, c] as const)],
      () => [...held.map((write) => this.submit(write)), ...also()],
    );
    const [jtisNewSettled, unusedSettled, written] = await Promise.all([jtisNew, unused, dependents].map((all) => Promise.allSettled(all)));
    try {
      checkCommitted({ jtisNew: jtisNewSettled, unused: unusedSettled, written });
    } catch (err) {
      // Another request used the code or refresh token first: it was used twice, so its grant ends with what the
      // other request got, as oidc-provider ends it when the second use comes later (RFC 9700 section 4.14.2).
      if (err instanceof errors.InvalidGrant && this.source) await endGrants(this.db, [this.source.grantId]);
      throw err;
    }
  }

  private once<T>(key: string, load: () => Promise<T>): Promise<T> {
    let found = this.reads.get(key) as Promise<T> | undefined;
    if (!found) this.reads.set(key, (found = load()));
    return found;
  }
}

type Settled = PromiseSettledResult<unknown>[];

/**
 * What a commit() came to, from its settled guards and writes: invalid_client when a jti was used before,
 * else invalid_grant when the code or refresh token was, else the store's error when a write failed (a
 * guard that failed to be written fails the commit with its error in its turn).
 */
export function checkCommitted(outcome: { jtisNew: Settled; unused: Settled; written: Settled }): void {
  const guard = (settled: Settled, refusal: () => Error) => {
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    if (!settled.every((s) => s.status === 'fulfilled' && Boolean(s.value))) throw refusal();
  };
  guard(outcome.jtisNew, () => new errors.InvalidClientAuth(REPLAYED));
  guard(outcome.unused, () => new errors.InvalidGrant(CONSUMED));
  const failed = outcome.written.find((w) => w.status === 'rejected');
  if (failed) throw failed.reason;
}

const requests = new WeakMap<object, RequestFacts>();

/** The facts of `request` (a Koa context), created on first use. */
export function factsOf(db: Db, request: object): RequestFacts {
  let facts = requests.get(request);
  if (!facts) requests.set(request, (facts = new RequestFacts(db)));
  return facts;
}

/** The facts of the request oidc-provider is serving right now, if any (for the adapter, which has no context). */
export function currentFacts(db: Db): RequestFacts | undefined {
  const ctx = Provider.ctx as object | undefined;
  return ctx ? factsOf(db, ctx) : undefined;
}
