// The demo accounts: seeded, listed in README and, in demo mode only, on the login page.
import type { NewUser } from './oidc/users.ts';

const PRACTITIONER_ROLE = 'http://terminology.hl7.org/CodeSystem/practitioner-role';

export interface DemoAccount extends NewUser {
  description: string;
}

export const DEMO_ACCOUNTS: DemoAccount[] = [
  {
    username: 'dr.smith', password: 'demo-password-1', name: 'Jane Smith, MD', fhirUser: 'Practitioner/dr-smith',
    description: 'Clinician (all patients)',
    attributes: {
      roles: [{ system: PRACTITIONER_ROLE, code: 'doctor', display: 'Doctor' }],
      purposes: ['TREAT', 'HPAYMT', 'HOPERAT'], clearance: 'R', sensitivities: ['HIV', 'PSY', 'SUD', 'ETH'],
      organization: 'Example Hospital', organizationId: 'urn:oid:2.16.840.1.113883.19.5',
    },
  },
  {
    username: 'dr.jones', password: 'demo-password-2', name: 'Alex Jones, MD', fhirUser: 'Practitioner/dr-jones',
    description: 'Emergency clinician who may break the glass (pat-1, pat-2)',
    attributes: {
      roles: [{ system: PRACTITIONER_ROLE, code: 'doctor', display: 'Doctor' }],
      purposes: ['TREAT', 'ETREAT'], clearance: 'N', sensitivities: [], breakGlass: true,
      organization: 'Example Hospital', organizationId: 'urn:oid:2.16.840.1.113883.19.5', patients: ['pat-1', 'pat-2'],
    },
  },
  {
    username: 'amy', password: 'demo-password-3', name: 'Amy Shaw', fhirUser: 'Patient/pat-1',
    description: 'Patient Amy Shaw (pat-1)',
    attributes: { purposes: ['PATRQT'], clearance: 'R', sensitivities: ['HIV', 'PSY', 'SUD', 'ETH'] },
  },
  {
    username: 'auditor', password: 'demo-password-4', name: 'Pat Privacy', description: 'Privacy officer (auditor)',
    attributes: { purposes: ['HOPERAT'], auditor: true, privacyOfficer: true, organization: 'Example Hospital' },
  },
];
