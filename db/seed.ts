// Demo data: the demo accounts (the bundled FHIR data set lives in server/fhir/demo-data.json).
import type { Db } from '../server/db.ts';
import { DEMO_ACCOUNTS } from '../server/demo-accounts.ts';
import { addUser } from '../server/oidc/users.ts';

export async function seedDemoData(db: Db): Promise<void> {
  for (const { description: _description, ...account } of DEMO_ACCOUNTS) {
    if (await db('users').where('username', account.username).first('id')) continue;
    try {
      await addUser(db, account);
    } catch (err) {
      // Another instance seeded the same account at the same moment.
      if (!(await db('users').where('username', account.username).first('id'))) throw err;
    }
  }
}

export async function hasDemoAccounts(db: Db): Promise<boolean> {
  return Boolean(await db('users').whereIn('username', DEMO_ACCOUNTS.map((a) => a.username)).andWhere('disabled', false).first('id'));
}
