// Request rate limits (in memory) and login throttling (in the database), with injected clocks.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { freshPostgresSchema, POSTGRES_URL } from '../support/postgres.ts';
import { createRateLimiter, rateLimit } from '../../server/limits/rate-limit.ts';
import { createLoginThrottle, type LoginThrottle } from '../../server/limits/login-throttle.ts';
import { migrate, openDatabase, type Db } from '../../server/db.ts';

describe('rate limiter', () => {
  it('allows `limit` requests per key per window, then tells how long to wait', () => {
    let now = 1_000_000;
    const limiter = createRateLimiter({ limit: 3, windowSeconds: 60, now: () => now });
    for (let i = 0; i < 3; i++) assert.deepEqual(limiter.take('a'), { allowed: true, retryAfter: 0 });
    assert.deepEqual(limiter.take('a'), { allowed: false, retryAfter: 60 });
    assert.equal(limiter.take('b').allowed, true, 'keys are counted apart');
    now += 45_500;
    assert.deepEqual(limiter.take('a'), { allowed: false, retryAfter: 15 });
    now += 14_500;
    assert.deepEqual(limiter.take('a'), { allowed: true, retryAfter: 0 }, 'a new window');
  });

  it('refused requests do not extend the window', () => {
    let now = 0;
    const limiter = createRateLimiter({ limit: 1, windowSeconds: 10, now: () => now });
    limiter.take('k');
    for (let i = 0; i < 9; i++) {
      now += 1000;
      assert.equal(limiter.take('k').allowed, false);
    }
    now += 1000;
    assert.equal(limiter.take('k').allowed, true);
  });

  it('drops expired keys and never holds more than maxKeys', () => {
    let now = 0;
    const limiter = createRateLimiter({ limit: 1, windowSeconds: 10, maxKeys: 100, now: () => now });
    for (let i = 0; i < 100; i++) limiter.take(`old-${i}`);
    assert.equal(limiter.size, 100);
    now += 10_000;
    limiter.take('new');
    assert.equal(limiter.size, 1, 'expired windows are swept');
    for (let i = 0; i < 1000; i++) limiter.take(`flood-${i}`);
    assert.ok(limiter.size <= 100, `size ${limiter.size}`);
    assert.equal(limiter.take('flood-999').allowed, false, 'the newest keys are kept');
  });

  it('the middleware answers 429 with Retry-After and an OAuth error on the listed paths (in any case, with a trailing slash) and methods only', async () => {
    const app = new Koa();
    app.use(rateLimit({ paths: ['/token'], limiter: createRateLimiter({ limit: 2, windowSeconds: 60 }), key: () => 'same' }));
    app.use((ctx) => { ctx.body = { ok: true }; });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      for (let i = 0; i < 2; i++) assert.equal((await fetch(`${base}/token`, { method: 'POST' })).status, 200);
      const refused = await fetch(`${base}/token`, { method: 'POST' });
      assert.equal(refused.status, 429);
      assert.equal(refused.headers.get('retry-after'), '60');
      assert.deepEqual(await refused.json(), { error: 'temporarily_unavailable', error_description: 'too many requests; retry after 60 seconds' });
      for (const spelling of ['/token/', '/Token', '/TOKEN/']) assert.equal((await fetch(`${base}${spelling}`, { method: 'POST' })).status, 429, `${spelling} is /token to the routers`);
      assert.equal((await fetch(`${base}/token`)).status, 200, 'GET is not limited');
      assert.equal((await fetch(`${base}/token/x`, { method: 'POST' })).status, 200, 'paths are exact');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

for (const dialect of ['sqlite', 'pg'] as const) describe(`login throttle on ${dialect === 'sqlite' ? 'SQLite' : 'PostgreSQL'}`, () => {
  let db: Db;
  let drop: () => Promise<void>;
  let now: number;
  let throttle: LoginThrottle;
  const MIN = 60_000;

  beforeEach(async function () {
    if (dialect === 'sqlite') {
      db = openDatabase('sqlite::memory:');
      drop = () => db.destroy();
    } else {
      const pg = await freshPostgresSchema('throttle_test');
      if (!pg) {
        console.log(`      (skipped: PostgreSQL is not reachable at ${POSTGRES_URL}; set TEST_POSTGRES_URL)`);
        return this.skip();
      }
      const pgDb = openDatabase(pg.url);
      db = pgDb;
      drop = async () => {
        await pgDb.destroy();
        await pg.drop();
      };
    }
    await migrate(db);
    now = Date.UTC(2030, 0, 1);
    throttle = createLoginThrottle(db, { maxFailures: 5, windowSeconds: 900, lockSeconds: 900, maxAddressFailures: 20, now: () => now });
  });
  afterEach(() => drop?.());

  async function fail(username: string, address = '10.0.0.1') {
    const check = await throttle.check(username, address);
    await throttle.failed(username, address);
    return check;
  }

  it('locks a user after 5 failures for 15 minutes, whatever the case of the name', async () => {
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(await fail(i % 2 ? 'Dr.Smith' : 'dr.smith'), { locked: false }, `attempt ${i + 1}`);
      now += MIN;
    }
    assert.deepEqual(await throttle.check('dr.smith', '10.0.0.2'), { locked: true }, 'from any address');
    await throttle.failed('dr.smith', '10.0.0.2');
    now += 13 * MIN; // 14 minutes after the fifth failure; locked attempts do not extend the lock
    assert.equal((await throttle.check('dr.smith', '10.0.0.3')).locked, true);
    now += MIN;
    assert.equal((await throttle.check('dr.smith', '10.0.0.3')).locked, false, 'unlocked 15 minutes after the fifth failure');
    assert.equal((await throttle.check('dr.jones', '10.0.0.1')).locked, false, 'another user is not affected');
  });

  it('forgets failures outside the 15-minute window', async () => {
    for (let i = 0; i < 4; i++) await fail('amy');
    now += 15 * MIN;
    for (let i = 0; i < 4; i++) assert.equal((await fail('amy')).locked, false);
    assert.equal((await fail('amy')).locked, false);
    assert.equal((await throttle.check('amy', '10.0.0.1')).locked, true);
  });

  it('a success resets the user', async () => {
    for (let i = 0; i < 4; i++) await fail('amy');
    assert.equal((await throttle.check('amy', '10.0.0.1')).locked, false);
    await throttle.succeeded('amy', '10.0.0.1');
    for (let i = 0; i < 4; i++) assert.equal((await fail('amy')).locked, false);
    assert.equal((await fail('amy')).locked, false, 'five more failures are allowed');
    assert.equal((await throttle.check('amy', '10.0.0.1')).locked, true);
  });

  it('a passed step (a correct password before a second factor) gives its attempt back and keeps earlier failures', async () => {
    for (let i = 0; i < 4; i++) await fail('amy');
    assert.equal((await throttle.check('amy', '10.0.0.1')).locked, false);
    await throttle.passed('amy', '10.0.0.1');
    assert.equal((await fail('amy')).locked, false, 'the fifth failure');
    assert.equal((await throttle.check('amy', '10.0.0.1')).locked, true, 'locked: the passed step did not reset the count');
  });

  it('refuses an address after 20 failures with Retry-After, for every user name, and a success does not clear it', async () => {
    for (let i = 0; i < 19; i++) assert.deepEqual(await fail(`user-${i}`), { locked: false });
    assert.equal((await throttle.check('amy', '10.0.0.1')).retryAfter, undefined);
    await throttle.succeeded('amy', '10.0.0.1');
    assert.deepEqual(await fail('user-19'), { locked: false });
    now += 10_000;
    assert.deepEqual(await throttle.check('amy', '10.0.0.1'), { locked: false, retryAfter: 890 });
    assert.equal((await throttle.check('amy', '10.0.0.9')).retryAfter, undefined, 'other addresses are not affected');
    now += 890_000;
    assert.deepEqual(await throttle.check('amy', '10.0.0.1'), { locked: false });
  });

  it('lets no more than 5 concurrent guesses at one user through', async () => {
    const checks = await Promise.all(Array.from({ length: 30 }, (_, i) => throttle.check('dr.smith', `10.0.1.${i}`)));
    assert.equal(checks.filter((c) => !c.locked).length, 5);
  });

  it('purges rows whose window and lock are over', async () => {
    await fail('bob');
    now += 5 * MIN;
    for (let i = 0; i < 5; i++) await fail('amy', '10.0.0.2');
    now += 10 * MIN;
    assert.equal(await throttle.purge(), 2, 'bob and his address; amy and hers are in their window');
    now += 5 * MIN;
    assert.equal(await throttle.purge(), 2);
    assert.equal(Number((await db('login_failures').count({ n: '*' }))[0].n), 0);
  });
});
