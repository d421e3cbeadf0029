// Login throttling: after `maxFailures` failed logins for one user within `windowSeconds`, that user is
// locked for `lockSeconds`; an address with `maxAddressFailures` failures in the window is refused (429)
// for `lockSeconds`. The counters live in the database (table login_failures) because several instances
// share one database: a lockout must hold whichever instance the next attempt reaches.
//
// Every attempt is counted when it is checked, before the password is: check() adds one to the counters
// in a single atomic upsert, so that concurrent guesses cannot all pass the check before the first
// failure is written. failed() keeps that count (and starts the lock once the limit is reached);
// succeeded() clears the user's counter and gives the address back its one attempt (it does not clear the
// address: one valid account must not launder an address that guesses at others). A correct password
// with a second factor still to show only passed(): the count goes on until the whole sign-in succeeds.
import type { Db } from '../db.ts';

export interface LoginThrottleOptions {
  /** Failures of one user within the window that lock the user (5). */
  maxFailures?: number;
  /** The counting window in seconds (900). */
  windowSeconds?: number;
  /** How long a locked user (or a refused address) stays locked, in seconds (900). */
  lockSeconds?: number;
  /** Failures from one address within the window after which it gets 429 (20). */
  maxAddressFailures?: number;
  /** The clock in milliseconds since the epoch; for tests. */
  now?: () => number;
}

export interface ThrottleCheck {
  /** The user is locked: show the generic login failure and do not even check the password. */
  locked: boolean;
  /** The address is over its limit: answer 429 with this Retry-After (seconds). */
  retryAfter?: number;
}

export interface LoginThrottle {
  /** Counts this attempt and says whether it may go on. Call it before authenticate(). */
  check(username: string, address: string | undefined): Promise<ThrottleCheck>;
  /** The attempt failed (wrong password, unknown user, or refused because locked). */
  failed(username: string, address: string | undefined): Promise<void>;
  /** The attempt succeeded: the user's failures are forgotten. */
  succeeded(username: string, address: string | undefined): Promise<void>;
  /**
   * A correct password with a second step still to come: this attempt is given back, earlier failures
   * stay counted (otherwise typing the password again would reset the count of wrong second-factor codes).
   */
  passed(username: string, address: string | undefined): Promise<void>;
  /** Deletes rows whose window and lock are both over (call it now and then). */
  purge(): Promise<number>;
}

interface Row {
  failures: number;
  window_start: number | string;
  locked_until: number | string | null;
}

const TABLE = 'login_failures';

/** The throttle keys of a login; an empty username or address has none. Long values are cut (which only merges counters). */
export const userKey = (username: string) => (username.trim() ? `user:${username.trim().toLowerCase().slice(0, 256)}` : undefined);
export const addressKey = (address: string | undefined) => (address ? `addr:${address.slice(0, 256)}` : undefined);

export function createLoginThrottle(db: Db, options: LoginThrottleOptions = {}): LoginThrottle {
  const maxFailures = options.maxFailures ?? 5;
  const windowSeconds = options.windowSeconds ?? 900;
  const lockSeconds = options.lockSeconds ?? 900;
  const maxAddressFailures = options.maxAddressFailures ?? 20;
  const clock = options.now ?? Date.now;
  const now = () => Math.floor(clock() / 1000);

  const rowsOf = (result: unknown): Row[] => (Array.isArray(result) ? result : (result as { rows: Row[] }).rows) as Row[];

  /** One atomic upsert: a new window when the old one is over, else one more failure. Returns the row after it. */
  async function count(key: string, at: number): Promise<Row> {
    const result = await db.raw(
      `INSERT INTO ${TABLE} (throttle_key, failures, window_start, locked_until) VALUES (?, 1, CAST(? AS BIGINT), NULL)
       ON CONFLICT (throttle_key) DO UPDATE SET
         failures = CASE WHEN ${TABLE}.window_start <= CAST(? AS BIGINT) THEN 1 ELSE ${TABLE}.failures + 1 END,
         window_start = CASE WHEN ${TABLE}.window_start <= CAST(? AS BIGINT) THEN CAST(? AS BIGINT) ELSE ${TABLE}.window_start END
       RETURNING failures, window_start, locked_until`,
      [key, at, at - windowSeconds, at - windowSeconds, at],
    );
    return rowsOf(result)[0];
  }

  /** Starts the lock of a key that has reached its limit, unless it is locked already (a lock is not extended). */
  async function lockIfOver(key: string, max: number, at: number): Promise<void> {
    await db(TABLE)
      .where('throttle_key', key)
      .andWhere('failures', '>=', max)
      .andWhere((q) => q.whereNull('locked_until').orWhere('locked_until', '<=', at))
      .update({ locked_until: at + lockSeconds });
  }

  /** One attempt less on a key's counter. */
  const giveBack = (key: string) => db(TABLE).where('throttle_key', key).andWhere('failures', '>', 0).update({ failures: db.raw('failures - 1') });

  return {
    async check(username, address) {
      const at = now();
      const addr = addressKey(address);
      if (addr) {
        const row = await count(addr, at);
        const lockedUntil = row.locked_until === null ? 0 : Number(row.locked_until);
        if (lockedUntil > at) return { locked: false, retryAfter: lockedUntil - at };
        // Over the limit without a lock yet: attempts in flight at the same time; wait for the window.
        if (row.failures > maxAddressFailures) return { locked: false, retryAfter: Math.max(1, Number(row.window_start) + windowSeconds - at) };
      }
      const user = userKey(username);
      if (!user) return { locked: false };
      const row = await count(user, at);
      const lockedUntil = row.locked_until === null ? 0 : Number(row.locked_until);
      return { locked: lockedUntil > at || row.failures > maxFailures };
    },

    async failed(username, address) {
      const at = now();
      const addr = addressKey(address);
      const user = userKey(username);
      if (addr) await lockIfOver(addr, maxAddressFailures, at);
      if (user) await lockIfOver(user, maxFailures, at);
    },

    async succeeded(username, address) {
      const addr = addressKey(address);
      const user = userKey(username);
      if (user) await db(TABLE).where('throttle_key', user).delete();
      if (addr) await giveBack(addr);
    },

    async passed(username, address) {
      for (const key of [userKey(username), addressKey(address)]) if (key) await giveBack(key);
    },

    async purge() {
      const at = now();
      return db(TABLE)
        .where('window_start', '<=', at - windowSeconds)
        .andWhere((q) => q.whereNull('locked_until').orWhere('locked_until', '<=', at))
        .delete();
    },
  };
}

/** The message of a login refused for its address (429); it names no account. */
export function tooManyAttempts(retryAfter: number): string {
  const minutes = Math.ceil(retryAfter / 60);
  return `Too many failed sign-in attempts from your network. Try again in ${minutes} minute${minutes === 1 ? '' : 's'}.`;
}
