// Provenance of the writes through the bundled /fhir (FHIR R4 Provenance): who changed what, when, with
// which app and why, stored in the same transaction as the change. Pure.
import { randomUUID } from 'node:crypto';
import type { TokenContext } from '../resource-server/types.ts';
import { codingList } from '../hcs/codes.ts';
import type { FhirResource } from './types.ts';

const DATA_OPERATION = 'http://terminology.hl7.org/CodeSystem/v3-DataOperation';
const PARTICIPANT_TYPE = 'http://terminology.hl7.org/CodeSystem/provenance-participant-type';
const ACTIVITIES = { create: 'CREATE', update: 'UPDATE', delete: 'DELETE' } as const;

const agentType = (code: string, display: string) => ({ coding: [{ system: PARTICIPANT_TYPE, code, display }] });

/**
 * Everything of a write's Provenance but its target: the activity, when, the user by role and
 * organization (their FHIR record, never their name) and the app, and the token's purpose of use as reason.
 */
export function provenanceTemplate(token: TokenContext, kind: 'create' | 'update' | 'delete', recorded: Date): FhirResource {
  const iua = ((token.claims.extensions as Record<string, unknown> | undefined)?.ihe_iua ?? {}) as Record<string, unknown>;
  const backend = !token.sub || token.sub === token.clientId;
  const organization = typeof iua.subject_organization === 'string' ? iua.subject_organization : undefined;
  const organizationId = typeof iua.subject_organization_id === 'string' ? iua.subject_organization_id : undefined;
  const roles = codingList(iua.subject_role);
  const app = { identifier: { system: token.issuer, value: token.clientId } };
  return {
    resourceType: 'Provenance',
    recorded: recorded.toISOString(),
    activity: { coding: [{ system: DATA_OPERATION, code: ACTIVITIES[kind] }] },
    agent: [
      ...(backend ? [] : [{
        type: agentType('author', 'Author'),
        ...(roles.length && { role: roles.map((coding) => ({ coding: [coding] })) }),
        who: token.fhirUser ? { reference: token.fhirUser } : { identifier: { system: token.issuer, value: String(token.sub) } },
        ...((organization || organizationId) && { onBehalfOf: { ...(organizationId && { identifier: { value: organizationId } }), ...(organization && { display: organization }) } }),
      }]),
      { type: agentType(backend ? 'author' : 'performer', backend ? 'Author' : 'Performer'), who: app },
    ],
    ...(codingList(iua.purpose_of_use).length && { reason: codingList(iua.purpose_of_use).map((coding) => ({ coding: [coding] })) }),
  };
}

/** The Provenance of one written version: the template with its target (`Type/id/_history/n`) and an id. */
export function provenanceFor(template: FhirResource, written: FhirResource): FhirResource {
  return {
    ...template,
    id: template.id ?? randomUUID(),
    target: [{ reference: `${written.resourceType}/${written.id}/_history/${written.meta?.versionId ?? '1'}` }],
  };
}
