// smart-auth/resource-server: enforce SMART tokens of a smart-auth (or any RFC 9068) issuer in front
// of a FHIR server. Use the Koa middleware, the node:http / Express listener, or the framework-neutral
// guard (request in, response out).
export { smartGuard, type SmartGuardOptions } from './koa.ts';
export { nodeGuard, type NodeGuardOptions } from './node.ts';
export { createGuard, type AccessRecord, type Guard, type GuardOptions, type GuardRequest, type ReceivedRequest } from './guard.ts';
export { createGuardVerifier, InvalidTokenError, VerifierUnavailableError, type GuardVerification } from './verify-token.ts';
export { createDpopCheck, memoryReplayStore, DPOP_ALGORITHMS, type DpopCheck, type DpopOptions, type DpopReplayStore } from './dpop.ts';
export { httpUpstream, type Upstream, type UpstreamResponse } from './upstream.ts';
export { provenanceUpstream } from './provenance-upstream.ts';
export { provenanceTemplate } from '../fhir/provenance.ts';
export { auditRepository, balpAudit, ruleOptions, upstreamConsents, type GuardRules } from './rules.ts';
export { allowOrigins, originOf, type OriginCheck } from './cors.ts';
export type { GuardResponse } from './responses.ts';
export type { IssueText, UpstreamErrorReport } from './upstream-outcome.ts';
export type { Decision, FhirInteraction, FhirRequest, PagePosition, Refusal, TokenContext, View } from './types.ts';
