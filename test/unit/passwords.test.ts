// Password hashes: scrypt with the cost stored in each hash, so hashes of another cost still verify.
import assert from 'node:assert/strict';
import { hashPassword, hashPasswordAtCost, verifyPassword } from '../../server/oidc/passwords.ts';

describe('password hashes', () => {
  it('hashes with N=2^15 by default, salted, and verifies only the password', async () => {
    const [a, b] = await Promise.all([hashPassword('correct horse'), hashPassword('correct horse')]);
    assert.match(a, /^scrypt\$32768\$8\$1\$[\w-]{22}\$[\w-]{43}$/);
    assert.notEqual(a, b, 'a fresh salt each time');
    assert.equal(await verifyPassword('correct horse', a), true);
    assert.equal(await verifyPassword('correct horsE', a), false);
  });

  it('verifies a hash of another cost by the parameters stored in it', async () => {
    const cheap = await hashPasswordAtCost('correct horse', 1024);
    assert.match(cheap, /^scrypt\$1024\$/);
    assert.equal(await verifyPassword('correct horse', cheap), true);
    assert.equal(await verifyPassword('wrong', cheap), false);
    assert.equal(await verifyPassword('correct horse', 'bcrypt$whatever'), false, 'another scheme never verifies');
  });
});
