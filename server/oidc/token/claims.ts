// What an access token says beyond RFC 9068: the SMART launch context, the user's FHIR identity,
// and the HCS attributes (IHE IUA who/why, IHE PCF clearance). Pure: callers fetch the inputs.
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import { nowSeconds } from '../../db.ts';
import { clientClearanceOf, clientOrganizationOf, clientPurposesOf } from '../clients.ts';
import { tokenGrantLink } from '../revocation.ts';
import { accessTokenLifetime } from './lifetime.ts';
import { factsOf } from './request.ts';
import type { RuleDeps } from './rules.ts';
import type { Config } from '../../config.ts';
import type { User } from '../users.ts';
import { subjectOf } from '../users.ts';
import { fhirUserUrl } from './account.ts';
import type { GrantContext } from '../launch-store.ts';
import { effectiveClearance, isEmergency, clientPermits, type Clearance } from '../../hcs/policy.ts';
import { residualFor, userSecurityClaims, type IheIua } from '../../hcs/token-claims.ts';
import { purposeCoding } from '../../hcs/codes.ts';
import { isActReasonPurpose, requestedPurpose } from '../../hcs/purpose-choice.ts';
import { authenticationClaims } from '../../auth/acr.ts';

/** How the user signed in (RFC 8176 amr, acr), as oidc-provider keeps it on the code or refresh token. */
export interface SignIn {
  acr?: string;
  amr?: string[];
}

/**
 * Claims of a token issued to an app for a user (authorization code and refresh), for the FHIR server
 * `audience`. The launch patient is that server's (its picker's, or a patient user matched by id), so its
 * URL is on `audience`; fhirUser is the user's own record, on this server's FHIR base (see fhirUserUrl).
 */
export function appTokenClaims(config: Pick<Config, 'fhirBase' | 'policy'>, audience: string, user: User | undefined, grant: GrantContext | undefined, signIn: SignIn = {}): Record<string, unknown> {
  const launch = grant?.launch;
  const claims: Record<string, unknown> = { ...authenticationClaims(signIn, grant?.stepUpAmr) };
  if (launch?.patient) claims.patient = launch.patient;
  if (launch?.encounter) claims.encounter = launch.encounter;
  if (launch?.fhirContext) claims.fhirContext = launch.fhirContext;
  if (!user) return claims;
  if (user.fhirUser) claims.fhirUser = fhirUserUrl(config.fhirBase, user);
  const subject = subjectOf(user);
  Object.assign(claims, userSecurityClaims({
    name: user.name,
    organization: user.attributes.organization,
    organizationId: user.attributes.organizationId,
    roles: subject.roles,
    purpose: grant?.purposeOfUse,
    clearance: effectiveClearance(config.policy, subject, grant?.purposeOfUse),
    patientUrl: launch?.patient ? `${audience}/Patient/${launch.patient}` : undefined,
    labels: config.policy.labels,
  }));
  return claims;
}

/**
 * Claims of a backend-service token: the IUA attributes of its hl7-b2b assertion extension (`iua`, parsed
 * when the assertion was checked), the organization the client is bound to (`organization`, which the
 * assertion named, if it named any: the registered name replaces the asserted one), and
 * exactly one purpose of use, from the assertion, a purpose_of_use scope token, or the single
 * purpose the client is registered for; it must be one the client is registered for (if any), and a client
 * registered for several must name one.
 * The client's clearance becomes the IHE PCF residual, as a user's does.
 */
export function backendTokenClaims(
  config: Pick<Config, 'policy'>,
  request: { iua: IheIua | undefined; scope?: unknown; organization?: { id: string; name?: string } },
  clientPurposes: readonly string[] | undefined,
  clearance: Clearance,
): Record<string, unknown> | undefined {
  const fail = (message: string): never => {
    throw new errors.InvalidRequest(message);
  };
  const iua: IheIua = { ...request.iua };
  if (request.organization) {
    iua.subject_organization_id = request.organization.id;
    if (request.organization.name) iua.subject_organization = request.organization.name;
    else delete iua.subject_organization;
  }
  // The code alone decides below, so a coding of another system (or an unknown code) must not pass as one.
  const foreign = iua.purpose_of_use?.find((c) => !isActReasonPurpose(c.system, c.code));
  if (foreign) fail(`hl7-b2b purpose_of_use ${foreign.system}#${foreign.code} is not a v3-ActReason purpose of use`);
  const asserted = [...new Set(iua.purpose_of_use?.map((c) => c.code) ?? [])];
  const fromScope = requestedPurpose(String(request.scope ?? ''), undefined);
  if (fromScope.error) fail(fromScope.error);
  if (fromScope.code) asserted.push(fromScope.code);
  const purposes = [...new Set(asserted)];
  if (purposes.length > 1) fail('a token carries exactly one purpose of use; the request asserts several');
  const purpose = purposes[0] ?? (clientPurposes?.length === 1 ? clientPurposes[0] : undefined);
  // Without a purpose the guard neither de-identifies nor applies purpose-specific consents: a client limited to
  // several purposes names one of them (a client registered for none may use any, and so may leave it out).
  if (!purpose && clientPurposes?.length) fail(`this client is registered for several purposes of use (${clientPurposes.join(', ')}): name one in the hl7-b2b purpose_of_use or a purpose_of_use scope`);
  if (purpose && isEmergency(config.policy, purpose)) fail(`a backend service cannot assert ${purpose}: emergency access is for people`);
  if (purpose && purposes.length && !clientPermits(clientPurposes, purpose)) fail(`purpose of use ${purpose} is not registered for this client`);
  if (purpose) iua.purpose_of_use = [purposeCoding(purpose)];
  const residual = residualFor(clearance);
  const extensions = { ...(Object.keys(iua).length && { ihe_iua: iua }), ...(residual.length && { ihe_pcf: { residual } }) };
  return Object.keys(extensions).length ? { extensions } : undefined;
}

/**
 * oidc-provider's extraTokenClaims: a backend service's IUA attributes and clearance, or an app's launch
 * context, user and sign-in; an app's token is also linked to its grant (committed with the answer).
 */
export function claimsRule({ config, db }: RuleDeps) {
  return async function tokenClaims(ctx: KoaContextWithOIDC, token: { jti: string; grantId?: string; accountId?: string; aud?: string | string[] }) {
    const facts = factsOf(db, ctx);
    if (!token.grantId) {
      const client = ctx.oidc.client;
      const request = { iua: facts.b2b, scope: ctx.oidc.params?.scope, organization: client && clientOrganizationOf(client) };
      return backendTokenClaims(config, request, client && clientPurposesOf(client), clientClearanceOf(client ?? {}));
    }
    const grant = await facts.grantContext(token.grantId);
    await facts.write(tokenGrantLink(token.jti, token.grantId, nowSeconds() + accessTokenLifetime(config, { backend: false, grant })));
    const source = ctx.oidc.entities.AuthorizationCode ?? ctx.oidc.entities.RefreshToken;
    const audience = [token.aud ?? config.fhirBase].flat()[0];
    return appTokenClaims(config, audience, await facts.user(token.accountId), grant, { acr: source?.acr, amr: source?.amr });
  };
}
