// SMART's rules for a client assertion (private_key_jwt) beyond RFC 7523, which oidc-provider has
// checked already (signature, iss, exp, jti replay). checkClientAssertion is pure; the rule is its hook.
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import { nowSeconds } from '../../db.ts';
import { factsOf } from './request.ts';
import { TOKEN_PATH } from './response.ts';
import type { RuleDeps } from './rules.ts';
import { B2bError, iuaFromHl7B2b } from '../../smart/hl7-b2b.ts';
import type { IheIua } from '../../hcs/token-claims.ts';
import { clientOrganizationOf } from '../clients.ts';

export interface AssertionContext {
  /**
   * The token endpoint URL the assertion must name as its only audience: the issuer's, never the URL as
   * the request spelled it (its Host header is the sender's to choose, so an assertion made for another
   * server could be replayed here under that server's name).
   */
  tokenEndpoint: string;
  /** Now, in epoch seconds. */
  now: number;
}

/** SMART: an assertion may live at most 5 minutes. */
const MAX_LIFETIME = 300;

/**
 * Checks the assertion and returns the IHE IUA attributes of its hl7-b2b extension (SMART Backend
 * Services), parsed once here for the token claims; throws invalid_client naming the broken rule. A client
 * bound to an organization (`organizationId`) may name no other one there.
 */
export function checkClientAssertion(
  claims: Record<string, unknown>,
  header: Record<string, unknown>,
  client: { clientId: string; jwksUri?: string; organizationId?: string },
  at: AssertionContext,
): IheIua | undefined {
  const fail = (message: string): never => {
    throw new errors.InvalidClientAuth(message);
  };
  if (header.typ !== 'JWT') fail('the client assertion header must have typ "JWT"');
  if (!header.kid) fail('the client assertion header must have a kid');
  if (claims.sub !== client.clientId) fail('the client assertion sub must equal iss, the client_id');
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (aud.length !== 1 || aud[0] !== at.tokenEndpoint) {
    fail(`the client assertion aud must be the token endpoint ${at.tokenEndpoint}`);
  }
  if (header.jku !== undefined && header.jku !== client.jwksUri) fail('the client assertion jku must equal the registered jwks_uri');
  if (Number(claims.exp) - at.now > MAX_LIFETIME) fail('client assertion exp must be at most 5 minutes in the future');
  const b2b = (claims.extensions as Record<string, unknown> | undefined)?.['hl7-b2b'];
  if (b2b === undefined) return undefined;
  try {
    const iua = iuaFromHl7B2b(b2b);
    if (client.organizationId !== undefined && iua.subject_organization_id !== client.organizationId) {
      throw new B2bError(`hl7-b2b organization_id must be ${client.organizationId}, the organization this client is registered for`);
    }
    return iua;
  } catch (err) {
    if (err instanceof B2bError) fail(err.message);
    throw err;
  }
}

/** oidc-provider's assertJwtClientAuthClaimsAndHeader: the checks above, the IUA attributes kept for the claims. */
export function clientAssertionRule({ config, db }: RuleDeps) {
  return async function clientAssertion(ctx: KoaContextWithOIDC, claims: Record<string, unknown>, header: Record<string, unknown>, client: { clientId: string; jwksUri?: string }) {
    const checked = { clientId: client.clientId, jwksUri: client.jwksUri, organizationId: clientOrganizationOf(client)?.id };
    factsOf(db, ctx).b2b = checkClientAssertion(claims, header, checked, {
      tokenEndpoint: `${config.issuer}${TOKEN_PATH}`,
      now: nowSeconds(),
    });
  };
}
