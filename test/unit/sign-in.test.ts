import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ACR, acrOf, acrSatisfies, amrOf, authenticationClaims, requestedAcr } from '../../server/auth/acr.ts';
import { newTotpSecret, totpCode, totpStep } from '../../server/auth/totp.ts';
import { passwordProblem } from '../../server/auth/password-policy.ts';
import { openSecret, sealSecret } from '../../server/oidc/keys.ts';
import { deviceOf } from '../../server/portal/security.ts';

describe('sign-in strength: amr and acr', () => {
  it('names the methods in RFC 8176 terms, with mfa when two factors were shown', () => {
    assert.deepEqual(amrOf(['pwd']), ['pwd']);
    assert.deepEqual(amrOf(['pwd', 'otp']), ['pwd', 'otp', 'mfa']);
    assert.deepEqual(amrOf(['pwd', 'recovery']), ['pwd', 'otp', 'mfa'], 'a recovery code is a one-time password');
    assert.deepEqual(amrOf(['hwk']), ['hwk', 'mfa'], 'a user-verified passkey is two factors on its own');
    assert.deepEqual(amrOf(['pwd', 'swk']), ['pwd', 'swk', 'mfa']);
    assert.equal(acrOf(['pwd']), ACR.pwd);
    assert.equal(acrOf(['pwd', 'otp', 'mfa']), ACR.mfa);
    assert.equal(acrOf(['hwk', 'mfa']), ACR.phr);
  });

  it('reads the weakest known level an app asks for, from acr_values and the claims parameter', () => {
    assert.equal(requestedAcr({}), undefined);
    assert.equal(requestedAcr({ acr_values: 'urn:other urn:smart-auth:acr:phr urn:smart-auth:acr:mfa' }), ACR.mfa);
    assert.equal(requestedAcr({ acr_values: 'urn:unknown' }), undefined);
    assert.equal(requestedAcr({ claims: JSON.stringify({ id_token: { acr: { essential: true, value: ACR.phr } } }) }), ACR.phr);
    assert.equal(requestedAcr({ claims: { userinfo: { acr: { values: [ACR.mfa, 7] } } } }), ACR.mfa);
    assert.equal(requestedAcr({ claims: '{not json' }), undefined);
    assert.equal(requestedAcr({ claims: JSON.stringify({ id_token: { acr: 'x' } }) }), undefined);
  });

  it('orders the levels: a stronger sign-in satisfies a weaker request', () => {
    assert.ok(acrSatisfies(ACR.phr, ACR.mfa));
    assert.ok(acrSatisfies(ACR.mfa, ACR.mfa));
    assert.ok(!acrSatisfies(ACR.pwd, ACR.mfa));
    assert.ok(!acrSatisfies(undefined, ACR.pwd));
    assert.ok(acrSatisfies(undefined, undefined));
  });

  it('joins a break-the-glass step-up to the sign-in in token claims', () => {
    assert.deepEqual(authenticationClaims({ acr: ACR.pwd, amr: ['pwd'] }, ['otp']), { acr: ACR.mfa, amr: ['pwd', 'otp', 'mfa'] });
    assert.deepEqual(authenticationClaims({ acr: ACR.mfa, amr: ['pwd', 'otp', 'mfa'] }, ['hwk']), { acr: ACR.phr, amr: ['pwd', 'otp', 'hwk', 'mfa'] });
    assert.deepEqual(authenticationClaims({ acr: ACR.mfa, amr: ['pwd', 'otp', 'mfa'] }), { acr: ACR.mfa, amr: ['pwd', 'otp', 'mfa'] });
    assert.deepEqual(authenticationClaims(undefined), {});
  });
});

describe('TOTP (RFC 6238)', () => {
  it('matches the RFC 6238 SHA-1 test vector', () => {
    // RFC 6238 appendix B: secret "12345678901234567890", T = 59 s -> 94287082 (8 digits); 6 digits: 287082.
    const secret = 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ';
    assert.equal(totpCode(secret, 59_000), '287082');
  });

  it('accepts a code one step either side and names its step; nothing further or malformed', () => {
    const secret = newTotpSecret();
    const now = 1_800_000_000_000;
    const step = Math.floor(now / 30_000);
    for (const delta of [-1, 0, 1]) assert.equal(totpStep(secret, totpCode(secret, now + delta * 30_000), now), step + delta);
    for (const delta of [-3, -2, 2, 3]) {
      const code = totpCode(secret, now + delta * 30_000);
      const accepted = totpStep(secret, code, now);
      assert.ok(accepted === undefined || Math.abs(accepted - step) <= 1, 'only by a 1-in-a-million collision');
    }
    for (const bad of ['', '12345', '1234567', 'abcdef', ' 123456']) assert.equal(totpStep(secret, bad, now), undefined);
  });

  it('never accepts a code outside the window (property)', () => {
    const secret = newTotpSecret();
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.string(), (at, code) => {
      const step = totpStep(secret, code, at);
      return step === undefined || Math.abs(step - Math.floor(at / 30_000)) <= 1;
    }));
  });
});

describe('secrets at rest', () => {
  it('seals a secret to its row: another label or key cannot open it', () => {
    const sealed = sealSecret('JBSWY3DPEHPK3PXP', 'totp:1', 'k'.repeat(32));
    assert.doesNotMatch(sealed, /JBSWY3DPEHPK3PXP/);
    assert.equal(openSecret(sealed, 'totp:1', 'k'.repeat(32)), 'JBSWY3DPEHPK3PXP');
    assert.throws(() => openSecret(sealed, 'totp:2', 'k'.repeat(32)), /cannot decrypt/);
    assert.throws(() => openSecret(sealed, 'totp:1', 'x'.repeat(32)), /cannot decrypt/);
    assert.throws(() => openSecret('plain', 'totp:1', 'k'.repeat(32)), /not in the encrypted format/);
  });
});

describe('new passwords', () => {
  it('need a length, not a common one, not the username', () => {
    assert.equal(passwordProblem('correct horse battery', 'amy'), undefined);
    assert.match(passwordProblem('short', 'amy')!, /at least 8/);
    assert.match(passwordProblem('x'.repeat(257), 'amy')!, /at most 256/);
    assert.match(passwordProblem('Password123', 'amy')!, /most common/);
    assert.match(passwordProblem('qwertyuiop', 'amy')!, /most common/);
    assert.match(passwordProblem('my name is AMY!', 'amy')!, /username/);
  });
});

describe('the session list', () => {
  it('describes a device from its User-Agent', () => {
    assert.equal(deviceOf('Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0 Safari/537.36'), 'Chrome on Windows');
    assert.equal(deviceOf('Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 Version/18.0 Mobile/15E148 Safari/604.1'), 'Safari on iOS');
    assert.equal(deviceOf('Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0'), 'Firefox on Linux');
    assert.equal(deviceOf(null), 'unknown device');
    assert.equal(deviceOf('curl/8.0'), 'curl/8.0');
  });
});
