// Which of a user's claims /userinfo gives for a token's scope: those the id_token's scopes release.
import assert from 'node:assert/strict';
import { scopedClaims } from '../../server/oidc/userinfo.ts';

describe('scopedClaims', () => {
  const user = { sub: 'u-1', name: 'Jane Smith, MD', fhirUser: 'http://x/fhir/Practitioner/dr-smith' };

  it('gives sub for openid, fhirUser for fhirUser and name for profile', () => {
    assert.deepEqual(scopedClaims('openid', user), { sub: 'u-1' });
    assert.deepEqual(scopedClaims('openid fhirUser patient/*.rs', user), { sub: 'u-1', fhirUser: user.fhirUser });
    assert.deepEqual(scopedClaims('openid profile fhirUser', user), user);
  });

  it('leaves out claims the user has no value for, and knows no scope from Object\'s prototype', () => {
    assert.deepEqual(scopedClaims('openid profile', { sub: 'u-1', name: undefined }), { sub: 'u-1' });
    assert.deepEqual(scopedClaims('constructor __proto__ toString', { ...user, constructor: 'x' }), {});
  });
});
