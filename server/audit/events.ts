// FHIR R4 AuditEvents built from what happened, in the IHE BALP shapes. Pure.
import { randomUUID } from 'node:crypto';
import { purposeCoding, type Coding } from '../hcs/codes.ts';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';

import type { AuditEvent } from './types.ts';

export type { AuditEvent } from './types.ts';

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
}

/**
 * "Emergency Override Started" (DICOM 110113 Security Alert / 110127): an access token was issued
 * under break-the-glass. Recorded by the authorization server for privacy-office review.
 */
export function emergencyOverrideStarted(e: EmergencyOverride): AuditEvent {
  return {
    resourceType: 'AuditEvent',
    id: randomUUID(),
    type: { system: DCM, code: '110113', display: 'Security Alert' },
    subtype: [{ system: DCM, code: '110127', display: 'Emergency Override Started' }],
    action: 'E',
    recorded: e.recorded.toISOString(),
    outcome: '0',
    purposeOfEvent: [{ coding: [purposeCoding(e.purpose)], text: e.reason }],
    agent: [
      {
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP', display: 'information recipient' }] },
        requestor: true,
        who: { identifier: { system: e.issuer, value: e.user.sub } },
        ...(e.user.name && { name: e.user.name }),
        ...(e.user.roles.length && { role: e.user.roles.map((r) => ({ coding: [r] })) }),
        ...(e.jti && { policy: [`urn:ietf:params:oauth:jti:${e.jti}`] }),
        purposeOfUse: [{ coding: [purposeCoding(e.purpose)] }],
        ...(e.address && { network: { address: e.address, type: '2' } }),
      },
      {
        type: { coding: [{ system: DCM, code: '110150', display: 'Application' }] },
        requestor: false,
        who: { identifier: { system: e.issuer, value: e.clientId } },
      },
    ],
    source: {
      observer: { display: e.issuer },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/extra-security-role-type', code: 'authserver', display: 'authorization server' }],
    },
    entity: e.patient
      ? [{
        what: { reference: `Patient/${e.patient}` },
        type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' },
        role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
      }]
      : [],
  };
}
