// FHIR R4 AuditEvents built from what happened, in the IHE BALP shapes. Pure.
// The builders live in balp.ts; this module keeps the authorization server's imports stable.
export {
  accessAuditEvents, accessTokenIssued, clientRegistrationChanged, consentDecision, emergencyOverrideStarted, loginFailed,
  loginSucceeded, logout, signingKeyRotated, tokenIntrospected, tokenRevoked,
  type EmergencyOverride,
} from './balp.ts';

export type { AuditEvent } from './types.ts';
