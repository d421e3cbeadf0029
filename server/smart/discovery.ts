// The SMART configuration document (SMART App Launch 2.2, conformance).
// Lists only what this server really does; every URL absolute.
import { DPOP_ALGORITHMS } from '../resource-server/dpop.ts';

export interface SmartEndpoints {
  issuer: string;
  authorization: string;
  token: string;
  jwks: string;
  introspection: string;
  revocation: string;
  registration?: string;
  management?: string;
}

export const SMART_CAPABILITIES = [
  'launch-ehr',
  'launch-standalone',
  'authorize-post',
  'client-public',
  'client-confidential-symmetric',
  'client-confidential-asymmetric',
  'sso-openid-connect',
  'context-banner',
  'context-style',
  'context-ehr-patient',
  'context-ehr-encounter',
  'context-standalone-patient',
  'permission-offline',
  'permission-online',
  'permission-patient',
  'permission-user',
  'permission-v1',
  'permission-v2',
] as const;

export interface Coding {
  system: string;
  code: string;
  display?: string;
}

/**
 * smart-auth extensions (RFC 8414 allows additional metadata): the purposes of use and the
 * subject roles the authorization server knows, as FHIR Codings (IHE IUA shapes).
 */
export interface HcsDiscovery {
  purposes_of_use_supported: Coding[];
  subject_roles_supported: Coding[];
}

/** SMART 2.2 User Access Brands: where the Bundle is, and this server's primary brand in it. */
export interface BrandDiscovery {
  user_access_brand_bundle: string;
  user_access_brand_identifier?: { system?: string; value?: string };
}

export function smartConfiguration(endpoints: SmartEndpoints, scopesSupported: readonly string[], hcs?: HcsDiscovery, brands?: BrandDiscovery) {
  return {
    issuer: endpoints.issuer,
    jwks_uri: endpoints.jwks,
    authorization_endpoint: endpoints.authorization,
    token_endpoint: endpoints.token,
    introspection_endpoint: endpoints.introspection,
    revocation_endpoint: endpoints.revocation,
    ...(endpoints.registration && { registration_endpoint: endpoints.registration }),
    ...(endpoints.management && { management_endpoint: endpoints.management }),
    grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types_supported: ['code'],
    token_endpoint_auth_methods_supported: ['private_key_jwt', 'client_secret_basic', 'client_secret_post', 'none'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384', 'RS256', 'ES256'],
    // RFC 9449: the algorithms of DPoP proofs, at the token endpoint and every guard.
    dpop_signing_alg_values_supported: [...DPOP_ALGORITHMS],
    scopes_supported: scopesSupported,
    code_challenge_methods_supported: ['S256'],
    capabilities: [...SMART_CAPABILITIES],
    ...brands,
    ...hcs,
  };
}

/** Scopes advertised in discovery (the list is not exhaustive: every v1/v2 resource scope works). */
export const SCOPES_SUPPORTED = [
  'openid', 'fhirUser', 'profile', 'launch', 'launch/patient', 'launch/encounter', 'offline_access', 'online_access',
  'patient/*.cruds', 'patient/*.rs', 'user/*.cruds', 'user/*.rs', 'system/*.rs',
  'patient/*.read', 'patient/*.write', 'user/*.read', 'user/*.write', 'system/*.read',
] as const;
