// FHIR R4 AuditEvents in the IHE BALP shapes (https://profiles.ihe.net/ITI/BALP/): the events of one
// guarded FHIR access (one per patient) and the authorization server's security events. Pure.
// Minimal by design: identifiers, codes and names only; never a resource's content, a search result,
// a token, a password or a client secret.
import { createHash, randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import { purposeCoding, type Coding } from '../hcs/codes.ts';
import type { AccessAudit, AuditEvent, SecurityLabel } from './types.ts';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const AUDIT_EVENT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
const RESTFUL_INTERACTION = 'http://hl7.org/fhir/restful-interaction';
const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const SOURCE_TYPE = 'http://terminology.hl7.org/CodeSystem/security-source-type';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const ROLE_CLASS = 'http://terminology.hl7.org/CodeSystem/v3-RoleClass';
const PROVENANCE_PARTICIPANT = 'http://terminology.hl7.org/CodeSystem/provenance-participant-type';
const EXTRA_SECURITY_ROLE = 'http://terminology.hl7.org/CodeSystem/extra-security-role-type';
const RESOURCE_TYPES = 'http://hl7.org/fhir/resource-types';
const IHE_EVENT_TYPE = 'urn:ihe:event-type-code';
const BALP = 'https://profiles.ihe.net/ITI/BALP';
const JTI = 'urn:ietf:params:oauth:jti:';

const coding = (system: string, code: string, display?: string): Coding => ({ system, code, ...(display && { display }) });

/** Every code the builders use, with the display its code system gives. */
export const CODES = {
  rest: coding(AUDIT_EVENT_TYPE, 'rest', 'Restful Operation'),
  applicationActivity: coding(DCM, '110100', 'Application Activity'),
  auditLogUsed: coding(DCM, '110101', 'Audit Log Used'),
  securityAlert: coding(DCM, '110113', 'Security Alert'),
  userAuthentication: coding(DCM, '110114', 'User Authentication'),
  login: coding(DCM, '110122', 'Login'),
  logout: coding(DCM, '110123', 'Logout'),
  emergencyOverrideStarted: coding(DCM, '110127', 'Emergency Override Started'),
  securityConfiguration: coding(DCM, '110129', 'Security Configuration'),
  objectSecurityAttributesChanged: coding(DCM, '110135', 'Object Security Attributes Changed'),
  userSecurityAttributesChanged: coding(DCM, '110137', 'User Security Attributes Changed'),
  getAccessToken: coding(IHE_EVENT_TYPE, 'ITI-71', 'Get Access Token'),
  introspectToken: coding(IHE_EVENT_TYPE, 'ITI-102', 'Introspect Token'),
  authzConsent: coding(`${BALP}/CodeSystem/AuthZsubType`, 'AuthZ-Consent', 'Authorization Decision using Roles and Consent'),
  application: coding(DCM, '110150', 'Application'),
  destination: coding(DCM, '110152', 'Destination Role ID'),
  source: coding(DCM, '110153', 'Source Role ID'),
  custodian: coding(PROVENANCE_PARTICIPANT, 'custodian', 'Custodian'),
  informationRecipient: coding(PARTICIPATION, 'IRCP', 'information recipient'),
  author: coding(PARTICIPATION, 'AUT', 'author (originator)'),
  userOauthAgent: coding(`${BALP}/CodeSystem/UserAgentTypes`, 'UserOauthAgent', 'User OAuth Agent participant'),
  authzOauthService: coding(`${BALP}/CodeSystem/UserAgentTypes`, 'AuthzOauthService', 'OAuth Authorization Server'),
  authServer: coding(EXTRA_SECURITY_ROLE, 'authserver', 'authorization server'),
  humanUser: coding(EXTRA_SECURITY_ROLE, 'humanuser', 'human user'),
  healthcareProvider: coding(ROLE_CLASS, 'PROV', 'healthcare provider'),
  person: coding(ENTITY_TYPE, '1', 'Person'),
  systemObject: coding(ENTITY_TYPE, '2', 'System Object'),
  xRequestId: coding(`${BALP}/CodeSystem/BasicAuditEntityType`, 'XrequestId', 'transport specific unique identifier where http X-Request-Id is used'),
  consent: coding(RESOURCE_TYPES, 'Consent', 'Consent'),
  patient: coding(OBJECT_ROLE, '1', 'Patient'),
  domainResource: coding(OBJECT_ROLE, '4', 'Domain Resource'),
  securityUser: coding(OBJECT_ROLE, '11', 'Security User Entity'),
  securityResource: coding(OBJECT_ROLE, '13', 'Security Resource'),
  query: coding(OBJECT_ROLE, '24', 'Query'),
  applicationServer: coding(SOURCE_TYPE, '4', 'Application Server'),
  securityServer: coding(SOURCE_TYPE, '6', 'Security Server'),
} as const;

/** The canonical URL of a BALP profile ("IHE.BasicAudit.PatientRead"). */
export const balpProfile = (id: string) => `${BALP}/StructureDefinition/${id}`;

// ---- the FHIR R4 pieces ----

type Action = 'C' | 'R' | 'U' | 'D' | 'E';
type Outcome = '0' | '4' | '8' | '12';

export interface CodeableConcept { coding?: Coding[]; text?: string }
export interface AuditReference { reference?: string; identifier?: { system?: string; value: string }; display?: string }
export interface AuditAgent {
  type?: CodeableConcept;
  role?: CodeableConcept[];
  who?: AuditReference;
  altId?: string;
  name?: string;
  requestor: boolean;
  policy?: string[];
  network?: { address: string; type: '1' | '2' | '5' };
  purposeOfUse?: CodeableConcept[];
}
export interface AuditEntity {
  what?: AuditReference;
  type?: Coding;
  role?: Coding;
  description?: string;
  securityLabel?: SecurityLabel[];
  query?: string;
  detail?: { type: string; valueString: string }[];
}

interface EventParts {
  profiles?: string[];
  type: Coding;
  subtype?: Coding[];
  action: Action;
  recorded: Date;
  outcome: Outcome;
  outcomeDesc?: string;
  purposeOfEvent?: CodeableConcept[];
  agent: AuditAgent[];
  source: { site?: string; observer: AuditReference; type: Coding[] };
  entity: AuditEntity[];
}

function auditEvent(p: EventParts): AuditEvent {
  return {
    resourceType: 'AuditEvent',
    id: randomUUID(),
    ...(p.profiles?.length && { meta: { profile: p.profiles } }),
    type: p.type,
    ...(p.subtype?.length && { subtype: p.subtype }),
    action: p.action,
    recorded: p.recorded.toISOString(),
    outcome: p.outcome,
    ...(p.outcomeDesc && { outcomeDesc: p.outcomeDesc }),
    ...(p.purposeOfEvent?.length && { purposeOfEvent: p.purposeOfEvent }),
    agent: p.agent,
    source: p.source,
    entity: p.entity,
  };
}

const concept = (...codings: Coding[]): CodeableConcept => ({ coding: codings });
const concepts = (codings: readonly Coding[] | undefined) => (codings ?? []).map((c) => concept(c));
const jtiPolicy = (jti: string | undefined) => (jti ? [`${JTI}${jti}`] : undefined);
const network = (address: string | undefined, type: '2' | '5') => (address ? { address, type } : undefined);
const base64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

/** Drops the members that are undefined or empty arrays, so that optional parts are absent rather than empty. */
function compact<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined && v !== null && v !== '' && !(Array.isArray(v) && !v.length))) as T;
}

// ---- agents ----

/** A person as the authorization server knows them (`sub` at `issuer`). */
export interface AuditUser {
  sub: string;
  name?: string | null;
  roles?: Coding[];
  organization?: string;
  organizationId?: string;
}

/** The person: requestor, identified by issuer and subject; roles and purposes of use when known; the token's jti as policy. */
function userAgent(issuer: string | undefined, user: AuditUser, types: Coding[], extra: { jti?: string; purposeOfUse?: readonly Coding[]; address?: string; requestor?: boolean } = {}): AuditAgent {
  return compact({
    type: concept(...types),
    requestor: extra.requestor ?? true,
    who: { identifier: compact({ system: issuer, value: user.sub }) },
    name: user.name ?? undefined,
    role: concepts(user.roles),
    purposeOfUse: concepts(extra.purposeOfUse),
    policy: jtiPolicy(extra.jti),
    network: network(extra.address, '2'),
  });
}

/** A failed login: only the name that was tried (and the account, when one has that name). */
function attemptedUserAgent(issuer: string, username: string, sub: string | undefined, address: string | undefined): AuditAgent {
  return compact({
    type: concept(CODES.humanUser),
    requestor: true,
    who: sub ? { identifier: { system: issuer, value: sub } } : { display: username },
    altId: username,
    network: network(address, '2'),
  });
}

/** The OAuth client (DICOM 110150 Application), identified by issuer and client_id. */
function appAgent(issuer: string | undefined, clientId: string, extra: { requestor: boolean; address?: string; jti?: string; purposeOfUse?: readonly Coding[] }): AuditAgent {
  return compact({
    type: concept(CODES.application),
    requestor: extra.requestor,
    who: { identifier: compact({ system: issuer, value: clientId }) },
    policy: jtiPolicy(extra.jti),
    purposeOfUse: concepts(extra.purposeOfUse),
    network: network(extra.address, '2'),
  });
}

/** The user's organization (v3-RoleClass PROV), when the token names one. */
function organizationAgent(actor: { organization?: string; organizationId?: string } | undefined): AuditAgent[] {
  if (!actor?.organization && !actor?.organizationId) return [];
  return [{
    type: concept(CODES.healthcareProvider),
    requestor: false,
    who: compact({ identifier: actor.organizationId ? { value: actor.organizationId } : undefined, display: actor.organization }),
  }];
}

/** This authorization server: coded for both the IUA ITI-71 (AuthzOauthService) and the AuthZconsent (authserver) patterns. */
function authServerAgent(issuer: string, withNetwork: boolean, requestor = false): AuditAgent {
  return compact({
    type: concept(CODES.authzOauthService, CODES.authServer),
    requestor,
    who: { display: issuer },
    network: withNetwork ? network(issuer, '5') : undefined,
  });
}

const securitySource = (issuer: string) => ({ observer: { display: issuer }, type: [CODES.securityServer] });

// ---- entities ----

const patientEntity = (patient: string): AuditEntity =>
  ({ what: { reference: `Patient/${patient}` }, type: CODES.person, role: CODES.patient });

/** A resource, with the labels it carried and those of how it went out: whom a patient's copy may name it to (audit-agents.ts). */
const dataEntity = (reference: string, labels: readonly SecurityLabel[]): AuditEntity =>
  compact({ what: { reference }, type: CODES.systemObject, role: CODES.domainResource, securityLabel: [...labels] });

const requestIdEntity = (requestId: string): AuditEntity => ({ what: { identifier: { value: requestId } }, type: CODES.xRequestId });

/** A token, by its jti (URN form, as in agent.policy), or by the digest of an opaque token. */
export type TokenRef = { jti: string } | { sha256: string };

/**
 * The reference for an opaque token (an oidc-provider refresh token, whose jti is the token itself):
 * its SHA-256, so that the token never reaches the audit trail.
 */
export function opaqueToken(value: string): TokenRef {
  return { sha256: createHash('sha256').update(value, 'utf8').digest('base64url') };
}

const tokenIdentifier = (token: TokenRef) => ({ value: 'jti' in token ? `${JTI}${token.jti}` : `sha256:${token.sha256}` });

const details = (pairs: Record<string, string | undefined>) =>
  Object.entries(pairs).flatMap(([type, value]) => (value ? [{ type, valueString: value }] : []));

const codesText = (codings: readonly Coding[] | undefined) => (codings ?? []).map((c) => `${c.system}|${c.code}`).join(' ') || undefined;

/** Request parameters whose values are credentials: redacted from every URL that is recorded. */
export const SECRET_PARAMETERS: ReadonlySet<string> = new Set([
  'access_token', 'refresh_token', 'id_token', 'id_token_hint', 'client_secret', 'client_assertion', 'code_verifier',
  'password', 'assertion', 'subject_token', 'actor_token',
]);

function parameterName(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' ')).toLowerCase();
  } catch {
    return raw.toLowerCase();
  }
}

/** The URL as sent, except for the values of credential parameters (`access_token=…` becomes `access_token=redacted`). */
export function redactUrl(url: string): string {
  const at = url.indexOf('?');
  if (at < 0) return url;
  const query = url.slice(at + 1).split('&').map((pair) => {
    const key = pair.split('=', 1)[0];
    return SECRET_PARAMETERS.has(parameterName(key)) ? `${key}=redacted` : pair;
  });
  return `${url.slice(0, at)}?${query.join('&')}`;
}

// ---- one guarded FHIR access ----

type Flow = 'out' | 'in' | 'delete';
interface InteractionShape {
  action: Action;
  /** out: data flows to the client (client Destination, server Source); in: the request flows to the server (client Source, server Destination). */
  flow: Flow;
  /** data: one entity per resource; query: the request as a query entity; none. */
  entities: 'data' | 'query' | 'none';
  /** Targets one instance (its reference can be taken from the URL when nothing was returned). */
  instance?: boolean;
  /** The BALP profile (without "Patient") a successful event of this kind conforms to. */
  profile?: 'Read' | 'Query' | 'Create' | 'Update' | 'Delete';
}

const INTERACTIONS: Record<string, InteractionShape> = {
  read: { action: 'R', flow: 'out', entities: 'data', instance: true, profile: 'Read' },
  vread: { action: 'R', flow: 'out', entities: 'data', instance: true, profile: 'Read' },
  'history-instance': { action: 'R', flow: 'out', entities: 'data', instance: true },
  history: { action: 'R', flow: 'in', entities: 'query' },
  'history-type': { action: 'R', flow: 'in', entities: 'query' },
  'history-system': { action: 'R', flow: 'in', entities: 'query' },
  search: { action: 'E', flow: 'in', entities: 'query', profile: 'Query' },
  'search-type': { action: 'E', flow: 'in', entities: 'query', profile: 'Query' },
  'search-system': { action: 'E', flow: 'in', entities: 'query', profile: 'Query' },
  create: { action: 'C', flow: 'in', entities: 'data', profile: 'Create' },
  update: { action: 'U', flow: 'in', entities: 'data', instance: true, profile: 'Update' },
  patch: { action: 'U', flow: 'in', entities: 'data', instance: true, profile: 'Update' },
  delete: { action: 'D', flow: 'delete', entities: 'data', instance: true, profile: 'Delete' },
  batch: { action: 'E', flow: 'in', entities: 'data' },
  transaction: { action: 'E', flow: 'in', entities: 'data' },
  operation: { action: 'E', flow: 'in', entities: 'query' },
  capabilities: { action: 'E', flow: 'in', entities: 'none' },
};
/** A request refused before it was classified: what was asked is all there is. */
const UNCLASSIFIED: InteractionShape = { action: 'E', flow: 'in', entities: 'query' };

function outcomeOf(status: number): { outcome: Outcome; outcomeDesc?: string } {
  if (status < 400) return { outcome: '0' };
  return { outcome: status < 500 ? '4' : '8', outcomeDesc: `${status} ${STATUS_CODES[status] ?? ''}`.trim() };
}

const joinUrl = (base: string, url: string) => `${base.replace(/\/+$/, '')}/${url.replace(/^\/+/, '')}`;

/** "Observation/obs-9" or "Observation/obs-9/_history/2" from an instance URL, when it is one. */
function targetOf(url: string): string | undefined {
  const [type, id, history, version] = url.split(/[?#]/)[0].replace(/^\/+/, '').split('/');
  if (!type || !/^[A-Z][A-Za-z]+$/.test(type) || !id || /^[$_]/.test(id)) return undefined;
  return history === '_history' && version ? `${type}/${id}/_history/${version}` : `${type}/${id}`;
}

function siteOf(base: string): string | undefined {
  try {
    return new URL(base).host || undefined;
  } catch {
    return undefined;
  }
}

function accessAgents(a: AccessAudit, shape: InteractionShape): AuditAgent[] {
  const issuer = a.user?.issuer ?? a.client.issuer;
  const serverType = shape.flow === 'out' ? CODES.source : shape.flow === 'delete' ? CODES.custodian : CODES.destination;
  const server: AuditAgent = { type: concept(serverType), requestor: false, who: { display: a.server.base }, network: { address: a.server.base, type: '5' } };
  // The app is the requestor when there is no user (a backend service): the token's jti and purposes go on it.
  const app = a.client.id
    ? appAgent(issuer, a.client.id, {
      requestor: !a.user,
      jti: a.user ? undefined : a.jti,
      purposeOfUse: a.user ? undefined : a.purposeOfUse,
      address: shape.flow === 'delete' ? a.client.address : undefined,
    })
    : undefined;
  const clientAgents: AuditAgent[] = shape.flow === 'delete'
    // BALP Delete: the client is the Application agent itself.
    ? [app ?? compact({ type: concept(CODES.application), requestor: false, network: network(a.client.address, '2') })]
    : [
      compact({
        type: concept(shape.flow === 'out' ? CODES.destination : CODES.source),
        requestor: false,
        who: a.client.id ? { identifier: { value: a.client.id } } : undefined,
        network: network(a.client.address, '2'),
      }),
      ...(app ? [app] : []),
    ];
  const user = a.user
    ? [userAgent(a.user.issuer, a.user, [shape.action === 'C' || shape.action === 'U' || shape.action === 'D' ? CODES.author : CODES.informationRecipient, CODES.userOauthAgent], {
      jti: a.jti,
      purposeOfUse: a.purposeOfUse,
    })]
    : [];
  // The organization the person acts for, or that a backend service acts for.
  return [...clientAgents.slice(0, 1), server, ...clientAgents.slice(1), ...user, ...organizationAgent(a.user ?? a.client)]
    .filter((agent) => agent.who || agent.network);
}

/** Whether `patient`'s event lists the resource: not another patient's (a batch's resources belong to several). */
const listedFor = (a: AccessAudit, patient: string | undefined) => (resource: string) => {
  const owners = a.resourcePatients?.[resource];
  return patient === undefined || !owners?.length || owners.includes(patient);
};

function accessEntities(a: AccessAudit, shape: InteractionShape, patient: string | undefined): AuditEntity[] {
  const labels = a.securityLabels?.length ? a.securityLabels : undefined;
  const url = redactUrl(a.url);
  const entities: AuditEntity[] = [];
  if (shape.entities === 'data') {
    const target = shape.instance && !a.resources.length ? targetOf(url) : undefined;
    entities.push(...(target ? [target] : a.resources.filter(listedFor(a, patient))).map((r) => dataEntity(r, [...(a.resourceLabels?.[r] ?? []), ...(labels ?? [])])));
  } else if (shape.entities === 'query') {
    const request = `${a.method.toUpperCase()} ${joinUrl(a.server.base, url)}`;
    entities.push(compact({ type: CODES.systemObject, role: CODES.query, securityLabel: labels, description: request, query: base64(request) }));
  }
  if (a.requestId) entities.push(requestIdEntity(a.requestId));
  return entities;
}

/**
 * The AuditEvents of one guarded FHIR access (BALP RESTful patterns): one per patient whose data was
 * returned or written (BALP §1:52.4.1.6), identical but for the patient entity, the id and the data
 * entities (each lists that patient's resources and those of no patient, never another's); exactly
 * one, without a patient entity, when no patient is involved. Profiles are claimed only for what
 * the event satisfies: the RESTful ones fix outcome 0, so refused and failed accesses claim none.
 */
export function accessAuditEvents(access: AccessAudit): AuditEvent[] {
  const shape = (access.interaction && INTERACTIONS[access.interaction]) || UNCLASSIFIED;
  const { outcome, outcomeDesc } = outcomeOf(access.status);
  const restProfile = outcome === '0' && shape.profile && access.client.id && access.client.address ? shape.profile : undefined;
  const tokenProfile = access.jti && access.client.id ? [balpProfile('IHE.BasicAudit.OAUTHaccessTokenUse.Minimal')] : [];
  const event = (patient: string | undefined): AuditEvent => auditEvent({
    profiles: [
      ...(restProfile ? [balpProfile(`IHE.BasicAudit.${patient ? 'Patient' : ''}${restProfile}`)] : []),
      ...tokenProfile,
    ],
    type: CODES.rest,
    subtype: access.interaction && INTERACTIONS[access.interaction] ? [coding(RESTFUL_INTERACTION, access.interaction, access.interaction)] : [],
    action: shape.action,
    recorded: access.recorded,
    outcome,
    outcomeDesc,
    // Built anew for each event (not shared between the events of several patients, nor cloned).
    agent: accessAgents(access, shape),
    source: compact({ site: siteOf(access.server.base), observer: { display: access.server.base }, type: [CODES.applicationServer] }),
    entity: patient ? [patientEntity(patient), ...accessEntities(access, shape, patient)] : accessEntities(access, shape, undefined),
  });
  const patients = [...new Set(access.patients)];
  return patients.length ? patients.map(event) : [event(undefined)];
}

// ---- the authorization server's security events ----

/** What every security event of the authorization server is given. */
export interface SecurityEventBase {
  recorded: Date;
  /** The authorization server's issuer: the observer, and the identifier system of users and clients. */
  issuer: string;
  /** The network address the request came from. */
  address?: string;
}

export interface LoginSucceeded extends SecurityEventBase {
  user: AuditUser;
  /** The client whose authorization request the login is part of. */
  clientId?: string;
  /** How: RFC 8176 amr values (`pwd`, `otp`, `hwk`, `mfa`, ...); a second-factor step names only its own. */
  amr?: string[];
}

export interface LoginFailed extends SecurityEventBase {
  /** The user name that was tried (never the password). */
  username: string;
  /** The account with that name, when there is one. */
  sub?: string;
  clientId?: string;
  /** Why it failed, for the reviewer ("unknown user or wrong password", "account locked"). */
  reason?: string;
  /** The method that failed (amr values), for a second factor. */
  amr?: string[];
}

export interface Logout extends SecurityEventBase {
  user: AuditUser;
  clientId?: string;
  /** Which session ended and why, when it was not the person signing out of this one. */
  session?: { kind: string; reason: string };
}

export interface UserSecurityChanged extends SecurityEventBase {
  /** Whose sign-in changed. */
  user: AuditUser;
  change: 'create' | 'update' | 'delete';
  /** What: totp, passkey, recovery-codes, password. */
  what: string;
  /** Who made the change when it was not the user (an administrator at the CLI has no account: none). */
  byAdministrator?: boolean;
}

export interface AccessTokenIssued extends SecurityEventBase {
  clientId: string;
  /** authorization_code, client_credentials, refresh_token, … */
  grantType: string;
  /** The scope granted. */
  scope: string;
  /** The scope requested, when it differs from the one granted. */
  requestedScope?: string;
  /** The access token's jti. */
  jti: string;
  user?: AuditUser;
  /** The patient in context (SMART `patient`). */
  patient?: string;
  purposeOfUse?: Coding[];
  expiresIn?: number;
}

/** The endpoints whose refusals are recorded, each in the pattern of its successful answers' records. */
const REFUSED_AT = {
  token: { type: CODES.userAuthentication, subtype: CODES.getAccessToken, action: 'E' }, //              IUA ITI-71
  introspection: { type: CODES.userAuthentication, subtype: CODES.introspectToken, action: 'E' }, //  IUA ITI-102
  revocation: { type: CODES.securityAlert, subtype: CODES.objectSecurityAttributesChanged, action: 'D' }, // as tokenRevoked
} as const;
export type RefusingEndpoint = keyof typeof REFUSED_AT;

export interface OAuthRequestRefused extends SecurityEventBase {
  /** Where the request was refused. */
  endpoint: RefusingEndpoint;
  /** The client_id as the request claimed it (parameter, Basic user or assertion sub); none when it named none. */
  clientId?: string;
  /** Whether the client authenticated (false for every invalid_client). */
  clientAuthenticated: boolean;
  grantType?: string;
  /** The scope requested. */
  scope?: string;
  /** The HTTP status of the answer. */
  status: number;
  /** The OAuth error code, and its description (never a credential). */
  error: string;
  description?: string;
  /** The user whose code or refresh token was sent, when it was found. */
  user?: AuditUser;
  /** The patient in that grant's launch context. */
  patient?: string;
  requestId?: string;
}

export interface TokenIntrospected extends SecurityEventBase {
  /** The client (usually a resource server) that asked. */
  callerId: string;
  active: boolean;
  /** The token asked about, when it could be identified. */
  token?: TokenRef;
  /** The client the token was issued to, for an active token. */
  clientId?: string;
}

export interface TokenRevoked extends SecurityEventBase {
  /** The client that asked for the revocation. */
  clientId: string;
  token: TokenRef;
  /** access_token or refresh_token. */
  tokenType?: string;
  /** The person who had it revoked, when a person did (a logout, an administrator). */
  user?: AuditUser;
  reason?: string;
}

export interface ClientRegistrationChanged extends SecurityEventBase {
  change: 'create' | 'update' | 'delete';
  clientId: string;
  /** Who changed it: an administrator, or a client using dynamic registration. */
  by: { user?: AuditUser; clientId?: string };
  /** The names of the metadata fields that changed (never their values). */
  fields?: string[];
  /** The change ended the client's grants and access tokens (an update of its organization binding). */
  endedAccess?: boolean;
}

export interface ConsentDecision extends SecurityEventBase {
  allowed: boolean;
  clientId: string;
  user: AuditUser;
  patient?: string;
  purposeOfUse?: Coding[];
  requestedScope?: string;
  /** The scope granted (allowed decisions). */
  grantedScope?: string;
  /** The Consent resources the decision was based on (ids). */
  consents?: string[];
  /** The access token issued as a result, when one was. */
  jti?: string;
  /** Why, for a denial. */
  reason?: string;
}

export interface SigningKeyRotated extends SecurityEventBase {
  /** The new signing key's kid (never key material). */
  kid: string;
  alg?: string;
  /** The kids of the keys taken out of signing. */
  retired?: string[];
  /** The administrator, when a person rotated it; a scheduled rotation has none. */
  by?: AuditUser;
}

export interface EmergencyOverride {
  issuer: string;
  recorded: Date;
  user: { sub: string; name?: string | null; roles: Coding[] };
  clientId: string;
  purpose: string;
  reason: string;
  /** The access token issued under the override. */
  jti?: string;
  patient?: string;
  address?: string;
  /** How the person signed in for this token (its amr values). */
  amr?: string[];
  /** The second factor shown again for this override (break-the-glass step-up), amr values. */
  stepUpAmr?: string[];
}

/** Where the caller's address goes: on the client app when there is one, else on the person. */
function sessionAgents(e: SecurityEventBase & { clientId?: string }, person: (address: string | undefined) => AuditAgent): AuditAgent[] {
  return [
    person(e.clientId ? undefined : e.address),
    ...(e.clientId ? [appAgent(e.issuer, e.clientId, { requestor: false, address: e.address })] : []),
    authServerAgent(e.issuer, true),
  ];
}

/** How the person authenticated, as entity details (AuditEvent has no field for it). */
const methodEntity = (amr: string[] | undefined, stepUp?: string[]): AuditEntity[] =>
  (amr?.length || stepUp?.length ? [{ type: CODES.systemObject, detail: details({ amr: amr?.join(' ') || undefined, step_up: stepUp?.join(' ') || undefined }) }] : []);

/** DICOM 110114 User Authentication / 110122 Login, success; the method (amr) as an entity detail. */
export function loginSucceeded(e: LoginSucceeded): AuditEvent {
  return auditEvent({
    type: CODES.userAuthentication, subtype: [CODES.login], action: 'E', recorded: e.recorded, outcome: '0',
    agent: [...sessionAgents(e, (address) => userAgent(e.issuer, e.user, [CODES.humanUser], { address })), ...organizationAgent(e.user)],
    source: securitySource(e.issuer),
    entity: methodEntity(e.amr),
  });
}

/** DICOM 110114 User Authentication / 110122 Login, minor failure (4): the name tried, never the password. */
export function loginFailed(e: LoginFailed): AuditEvent {
  return auditEvent({
    type: CODES.userAuthentication, subtype: [CODES.login], action: 'E', recorded: e.recorded, outcome: '4',
    outcomeDesc: e.reason ?? 'authentication failed',
    agent: sessionAgents(e, (address) => attemptedUserAgent(e.issuer, e.username, e.sub, address)),
    source: securitySource(e.issuer),
    entity: methodEntity(e.amr),
  });
}

/** DICOM 110114 User Authentication / 110123 Logout; a session ended otherwise names its kind and why. */
export function logout(e: Logout): AuditEvent {
  return auditEvent({
    type: CODES.userAuthentication, subtype: [CODES.logout], action: 'E', recorded: e.recorded, outcome: '0',
    agent: sessionAgents(e, (address) => userAgent(e.issuer, e.user, [CODES.humanUser], { address })),
    source: securitySource(e.issuer),
    entity: e.session ? [{ type: CODES.systemObject, detail: details({ session: e.session.kind, reason: e.session.reason }) }] : [],
  });
}

/**
 * A person's sign-in changed (a second factor enrolled or removed, recovery codes replaced, the
 * password changed): DICOM 110113 Security Alert / 110137 User Security Attributes Changed, action
 * C/U/D; the user as the security user entity (object-role 11) with what changed (never a secret).
 */
export function userSecurityChanged(e: UserSecurityChanged): AuditEvent {
  const person = userAgent(e.issuer, e.user, [CODES.humanUser], { address: e.address });
  return auditEvent({
    type: CODES.securityAlert, subtype: [CODES.userSecurityAttributesChanged], action: CHANGE_ACTIONS[e.change], recorded: e.recorded, outcome: '0',
    agent: e.byAdministrator ? [authServerAgent(e.issuer, false, true)] : [person, authServerAgent(e.issuer, true)],
    source: securitySource(e.issuer),
    entity: [compact({
      what: { identifier: { system: e.issuer, value: e.user.sub } },
      type: CODES.person,
      role: CODES.securityUser,
      detail: details({ changed: e.what, by: e.byAdministrator ? 'administrator' : undefined }),
    })],
  });
}

/**
 * An access token issued (also on refresh: grant type refresh_token), in the IUA ITI-71 pattern
 * (BALP AuditIUAgetAccessToken: DICOM 110114 / urn:ihe:event-type-code ITI-71, action E): the client,
 * this server, the user; the token request as a query entity (only its non-secret parameters) and
 * the token issued (jti) with the grant's key values as details.
 */
export function accessTokenIssued(e: AccessTokenIssued): AuditEvent {
  const request = new URLSearchParams({ grant_type: e.grantType, client_id: e.clientId, scope: e.requestedScope ?? e.scope }).toString();
  return auditEvent({
    type: CODES.userAuthentication, subtype: [CODES.getAccessToken], action: 'E', recorded: e.recorded, outcome: '0',
    agent: [
      appAgent(e.issuer, e.clientId, { requestor: !e.user, address: e.address }),
      authServerAgent(e.issuer, true),
      ...(e.user ? [userAgent(e.issuer, e.user, [CODES.informationRecipient, CODES.userOauthAgent], { jti: e.jti, purposeOfUse: e.purposeOfUse })] : []),
    ],
    source: securitySource(e.issuer),
    entity: [
      { type: CODES.systemObject, role: CODES.query, query: base64(request) },
      {
        what: { identifier: tokenIdentifier({ jti: e.jti }) },
        type: CODES.systemObject,
        role: CODES.securityResource,
        detail: details({
          grant_type: e.grantType,
          client_id: e.clientId,
          sub: e.user?.sub,
          patient: e.patient,
          purpose_of_use: codesText(e.purposeOfUse),
          scope: e.scope,
          expires_in: e.expiresIn === undefined ? undefined : String(e.expiresIn),
        }),
      },
    ],
  });
}

/**
 * A request refused at the token, introspection or revocation endpoint (any OAuth error answer), in the
 * pattern of that endpoint's successful records (ITI-71 as accessTokenIssued, ITI-102 as tokenIntrospected,
 * 110135 as tokenRevoked): outcome 4 (minor failure: the request's fault, 4xx) or 8 (serious failure: the
 * server's, 5xx), the OAuth error as outcomeDesc. The client as it named itself (a detail says whether it
 * authenticated; an unnamed one is an Application agent with its address only), this server, the user
 * whose code or refresh token it sent when known; the request's non-secret parameters and its X-Request-Id.
 */
export function oauthRequestRefused(e: OAuthRequestRefused): AuditEvent {
  const request = new URLSearchParams(compact({ grant_type: e.grantType, client_id: e.clientId, scope: e.scope }) as Record<string, string>).toString();
  const { type, subtype, action } = REFUSED_AT[e.endpoint];
  return auditEvent({
    type, subtype: [subtype], action, recorded: e.recorded,
    outcome: e.status < 500 ? '4' : '8', outcomeDesc: e.description ? `${e.error}: ${e.description}` : e.error,
    agent: [
      e.clientId
        ? appAgent(e.issuer, e.clientId, { requestor: true, address: e.address })
        : compact({ type: concept(CODES.application), requestor: true, network: network(e.address, '2') }),
      authServerAgent(e.issuer, true),
      ...(e.user ? [userAgent(e.issuer, e.user, [CODES.humanUser], { requestor: false })] : []),
    ],
    source: securitySource(e.issuer),
    entity: [
      compact({
        type: CODES.systemObject, role: CODES.query, query: base64(request),
        detail: details({
          grant_type: e.grantType,
          client_id: e.clientId,
          client_authenticated: String(e.clientAuthenticated),
          sub: e.user?.sub,
          patient: e.patient,
          error: e.error,
        }),
      }),
      ...(e.requestId ? [requestIdEntity(e.requestId)] : []),
    ],
  });
}

/** A token entity (DICOM/object-role 13 Security Resource) with the given details. */
const tokenEntity = (token: TokenRef | undefined, pairs: Record<string, string | undefined>): AuditEntity =>
  compact({ what: token ? { identifier: tokenIdentifier(token) } : undefined, type: CODES.systemObject, role: CODES.securityResource, detail: details(pairs) });

/**
 * IUA ITI-102 Introspect Token at this server: DICOM 110114 User Authentication (as ITI-71) with the
 * IHE transaction code ITI-102. An inactive token is a minor failure (4).
 */
export function tokenIntrospected(e: TokenIntrospected): AuditEvent {
  return auditEvent({
    type: CODES.userAuthentication, subtype: [CODES.introspectToken], action: 'E', recorded: e.recorded,
    outcome: e.active ? '0' : '4', outcomeDesc: e.active ? undefined : 'token not active',
    agent: [appAgent(e.issuer, e.callerId, { requestor: true, address: e.address }), authServerAgent(e.issuer, true)],
    source: securitySource(e.issuer),
    entity: [tokenEntity(e.token, { active: String(e.active), client_id: e.clientId })],
  });
}

/** RFC 7009 revocation: DICOM 110113 Security Alert / 110135 Object Security Attributes Changed, action D. */
export function tokenRevoked(e: TokenRevoked): AuditEvent {
  return auditEvent({
    type: CODES.securityAlert, subtype: [CODES.objectSecurityAttributesChanged], action: 'D', recorded: e.recorded, outcome: '0',
    agent: [
      ...(e.user ? [userAgent(e.issuer, e.user, [CODES.humanUser])] : []),
      appAgent(e.issuer, e.clientId, { requestor: !e.user, address: e.address }),
      authServerAgent(e.issuer, true),
    ],
    source: securitySource(e.issuer),
    entity: [tokenEntity(e.token, { token_type: e.tokenType, reason: e.reason })],
  });
}

const CHANGE_ACTIONS = { create: 'C', update: 'U', delete: 'D' } as const;

/** Who changed the server's configuration: a person, or a client (dynamic registration); nobody for a scheduled change. */
function changedBy(e: SecurityEventBase, by: { user?: AuditUser; clientId?: string } | undefined): AuditAgent[] {
  if (by?.user) return [userAgent(e.issuer, by.user, [CODES.humanUser], { address: e.address })];
  if (by?.clientId) return [appAgent(e.issuer, by.clientId, { requestor: true, address: e.address })];
  return [];
}

/**
 * A client registered, changed or removed: DICOM 110113 Security Alert / 110129 Security Configuration
 * (who may obtain tokens changed), action C/U/D; the client as a security user entity (object-role 11).
 */
export function clientRegistrationChanged(e: ClientRegistrationChanged): AuditEvent {
  const actors = changedBy(e, e.by);
  return auditEvent({
    type: CODES.securityAlert, subtype: [CODES.securityConfiguration], action: CHANGE_ACTIONS[e.change], recorded: e.recorded, outcome: '0',
    agent: [...actors, authServerAgent(e.issuer, true, !actors.length)],
    source: securitySource(e.issuer),
    entity: [compact({
      what: { identifier: { system: e.issuer, value: e.clientId } },
      type: CODES.systemObject,
      role: CODES.securityUser,
      detail: [
        ...(e.fields ?? []).map((field) => ({ type: 'changed', valueString: field })),
        ...(e.endedAccess ? [{ type: 'ended', valueString: 'grants and access tokens' }] : []),
      ],
    })],
  });
}

export interface InitialAccessTokenIssued extends SecurityEventBase {
  /** A SHA-256 digest of the token, to tell issued tokens apart: never the token itself. */
  tokenDigest: string;
  expiresIn: number;
  /** What a registration made with it may ask for beyond a SMART app (field names, e.g. "scope: system/Patient.rs"). */
  privileges: string[];
}

/**
 * An initial access token issued by an administrator: DICOM 110113 Security Alert / 110129 Security
 * Configuration, action C: it lets someone register clients, possibly privileged ones.
 */
export function initialAccessTokenIssued(e: InitialAccessTokenIssued): AuditEvent {
  return auditEvent({
    type: CODES.securityAlert, subtype: [CODES.securityConfiguration], action: 'C', recorded: e.recorded, outcome: '0',
    agent: [authServerAgent(e.issuer, true, true)],
    source: securitySource(e.issuer),
    entity: [{
      what: { identifier: { system: `${e.issuer}/initial-access-token`, value: e.tokenDigest } },
      type: CODES.systemObject,
      role: CODES.securityResource,
      detail: [{ type: 'expires_in', valueString: String(e.expiresIn) }, ...e.privileges.map((p) => ({ type: 'privilege', valueString: p }))],
    }],
  });
}

/**
 * An authorization decision (BALP AuthZconsent: DICOM 110113 Security Alert / AuthZ-Consent, action E):
 * permit 0, deny 8 with the reason (as the IG's deny example); the client, the user, the user's
 * organization, this server as authorizer; the patient, the Consents used and the token issued.
 */
export function consentDecision(e: ConsentDecision): AuditEvent {
  return auditEvent({
    type: CODES.securityAlert, subtype: [CODES.authzConsent], action: 'E', recorded: e.recorded,
    outcome: e.allowed ? '0' : '8', outcomeDesc: e.allowed ? undefined : e.reason ?? 'authorization denied',
    purposeOfEvent: concepts(e.purposeOfUse),
    agent: [
      appAgent(e.issuer, e.clientId, { requestor: false, address: e.address }),
      userAgent(e.issuer, e.user, [CODES.informationRecipient, ...(e.jti ? [CODES.userOauthAgent] : [])], { jti: e.jti, purposeOfUse: e.purposeOfUse }),
      ...organizationAgent(e.user),
      authServerAgent(e.issuer, false),
    ],
    source: securitySource(e.issuer),
    entity: [
      ...(e.patient ? [patientEntity(e.patient)] : []),
      ...(e.consents ?? []).map((id): AuditEntity => ({ what: { reference: `Consent/${id}` }, type: CODES.consent })),
      ...(e.jti || e.grantedScope || e.requestedScope
        ? [compact({
          what: e.jti ? { identifier: tokenIdentifier({ jti: e.jti }) } : undefined,
          type: CODES.userOauthAgent,
          detail: details({ scope: e.allowed ? e.grantedScope : undefined, requested_scope: e.requestedScope }),
        })]
        : []),
    ],
  });
}

/**
 * The token signing key rotated: DICOM 110113 Security Alert / 110129 Security Configuration (the
 * keys relying parties must trust changed); the new key by kid, the retired ones as details.
 */
export function signingKeyRotated(e: SigningKeyRotated): AuditEvent {
  const actors = changedBy(e, { user: e.by });
  return auditEvent({
    type: CODES.securityAlert, subtype: [CODES.securityConfiguration], action: 'E', recorded: e.recorded, outcome: '0',
    agent: [...actors, authServerAgent(e.issuer, true, !actors.length)],
    source: securitySource(e.issuer),
    entity: [compact({
      what: { identifier: { system: `${e.issuer.replace(/\/+$/, '')}/jwks`, value: e.kid } },
      type: CODES.systemObject,
      role: CODES.securityResource,
      detail: [...details({ alg: e.alg }), ...(e.retired ?? []).map((kid) => ({ type: 'retired_kid', valueString: kid }))],
    })],
  });
}

/**
 * "Emergency Override Started" (DICOM 110113 Security Alert / 110127): an access token was issued
 * under break-the-glass. Recorded by the authorization server for privacy-office review.
 */
export function emergencyOverrideStarted(e: EmergencyOverride): AuditEvent {
  const purpose = [purposeCoding(e.purpose)];
  return auditEvent({
    type: CODES.securityAlert, subtype: [CODES.emergencyOverrideStarted], action: 'E', recorded: e.recorded, outcome: '0',
    purposeOfEvent: [{ coding: purpose, text: e.reason }],
    agent: [
      userAgent(e.issuer, e.user, [CODES.informationRecipient, ...(e.jti ? [CODES.userOauthAgent] : [])], { jti: e.jti, purposeOfUse: purpose }),
      appAgent(e.issuer, e.clientId, { requestor: false, address: e.address }),
    ],
    source: securitySource(e.issuer),
    entity: [...(e.patient ? [patientEntity(e.patient)] : []), ...methodEntity(e.amr, e.stepUpAmr)],
  });
}

export interface AuditLogUsed extends SecurityEventBase {
  /** What was done with the trail: a patient's report exported, records purged, a privacy hold set or released. */
  use: 'export' | 'purge' | 'hold' | 'release';
  /** The patient whose records were exported, or held or released. */
  patient?: string;
  /** What was asked and done (format, before, removed, kept, reason): never report content. */
  details?: Record<string, string | undefined>;
}

const AUDIT_LOG_ACTIONS = { export: 'R', purge: 'D', hold: 'U', release: 'U' } as const;

/**
 * The audit trail itself used by an administrator (DICOM 110101 Audit Log Used): an export of a
 * patient's report (the patient as object-role 1, as a read of their data), a purge, or a privacy hold
 * set or released (the patient as a security resource: the privacy office's reason is not theirs to read).
 */
export function auditLogUsed(e: AuditLogUsed): AuditEvent {
  const about: AuditEntity[] = !e.patient ? []
    : e.use === 'export' ? [patientEntity(e.patient)]
      : [{ what: { reference: `Patient/${e.patient}` }, type: CODES.person, role: CODES.securityResource }];
  return auditEvent({
    type: CODES.auditLogUsed, action: AUDIT_LOG_ACTIONS[e.use], recorded: e.recorded, outcome: '0',
    agent: [authServerAgent(e.issuer, true, true)],
    source: securitySource(e.issuer),
    entity: [...about, compact({ type: CODES.systemObject, description: e.use, detail: details(e.details ?? {}) })],
  });
}

export interface EhrLaunchCreated extends SecurityEventBase {
  /** The launch id: only its SHA-256 digest is recorded, since the id opens the context until it is used. */
  launch: string;
  patient: string;
  encounter?: string;
  /** The app the launch is bound to, when it is bound to one. */
  clientId?: string;
  /** The user (users.id) the launch is bound to, when it is bound to one. */
  userId?: string;
  fhirContext?: string[];
  /** Who asked for it through the launch API: the user and the app of the token (its jti); none for an administrator. */
  by: { user?: AuditUser; clientId?: string; jti?: string };
}

/**
 * An EHR launch id minted (DICOM 110100 Application Activity, action C): someone opened a patient's
 * context for an app. The requestor (the token's user, else its app, else this server for the CLI);
 * the patient; the launch by digest, with its app, encounter, the user it is for and fhirContext references.
 */
export function ehrLaunchCreated(e: EhrLaunchCreated): AuditEvent {
  const { user, clientId, jti } = e.by;
  return auditEvent({
    type: CODES.applicationActivity, action: 'C', recorded: e.recorded, outcome: '0',
    agent: [
      ...(user ? [userAgent(e.issuer, user, [CODES.humanUser], { jti, address: e.address })] : []),
      ...(clientId ? [appAgent(e.issuer, clientId, user ? { requestor: false } : { requestor: true, jti, address: e.address })] : []),
      authServerAgent(e.issuer, true, !user && !clientId),
    ],
    source: securitySource(e.issuer),
    entity: [patientEntity(e.patient), compact({
      what: { identifier: { system: `${e.issuer.replace(/\/+$/, '')}/launch`, ...tokenIdentifier(opaqueToken(e.launch)) } },
      type: CODES.systemObject,
      role: CODES.securityResource,
      detail: [
        ...details({ client_id: e.clientId, encounter: e.encounter && `Encounter/${e.encounter}`, user: e.userId }),
        ...(e.fhirContext ?? []).map((reference) => ({ type: 'fhirContext', valueString: reference })),
      ],
    })],
  });
}
