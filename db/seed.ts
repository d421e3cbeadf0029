// Demo data: the demo accounts (the bundled FHIR data set lives in server/fhir/demo-data.json).
import type { Db } from '../server/db.ts';
import { DEMO_ACCOUNTS } from '../server/demo-accounts.ts';
import { addUser } from '../server/oidc/users.ts';
import { hashPassword } from '../server/oidc/passwords.ts';

/**
 * Each demo password is hashed once per process: a process that seeds many databases (the test suite
 * starts hundreds of servers) would otherwise spend about 0.15 s of scrypt per account on every one.
 * The demo passwords are published in the README; what the hash protects is the same either way.
 */
const demoHashes = new Map<string, Promise<string>>();
function demoPasswordHash(password: string): Promise<string> {
  let hash = demoHashes.get(password);
  if (!hash) {
    demoHashes.set(password, (hash = hashPassword(password)));
    hash.catch(() => demoHashes.delete(password));
  }
  return hash;
}

export async function seedDemoData(db: Db): Promise<void> {
  for (const { description: _description, ...account } of DEMO_ACCOUNTS) {
    if (await db('users').where('username', account.username).first('id')) continue;
    try {
      await addUser(db, account, demoPasswordHash);
    } catch (err) {
      // Another instance seeded the same account at the same moment.
      if (!(await db('users').where('username', account.username).first('id'))) throw err;
    }
  }
}

export async function hasDemoAccounts(db: Db): Promise<boolean> {
  return Boolean(await db('users').whereIn('username', DEMO_ACCOUNTS.map((a) => a.username)).andWhere('disabled', false).first('id'));
}
