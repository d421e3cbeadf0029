// Reads that several hooks of one token request need (oidc-provider's findAccount, extraTokenClaims,
// the TTL and refresh hooks, the token response): each is made once per request.
import type { Db } from '../db.ts';
import { findGrantContext, type GrantContext } from './launch-store.ts';
import { findUser, type User } from './users.ts';

const memos = new WeakMap<object, Map<string, Promise<unknown>>>();

function once<T>(request: object, key: string, load: () => Promise<T>): Promise<T> {
  let memo = memos.get(request);
  if (!memo) memos.set(request, (memo = new Map()));
  let found = memo.get(key) as Promise<T> | undefined;
  if (!found) memo.set(key, (found = load()));
  return found;
}

/** The grant's launch context, read once per request (`request`: the Koa context). */
export function grantContextOf(db: Db, request: object, grantId: string | undefined): Promise<GrantContext | undefined> {
  return grantId ? once(request, `grant:${grantId}`, () => findGrantContext(db, grantId)) : Promise.resolve(undefined);
}

/** A user, read once per request. */
export function userOf(db: Db, request: object, id: string | undefined): Promise<User | undefined> {
  return id ? once(request, `user:${id}`, () => findUser(db, id)) : Promise.resolve(undefined);
}
