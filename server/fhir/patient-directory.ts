// The patients the picker and the launcher can list, read from the FHIR store.
import type { DemoStore } from './demo-store.ts';
import type { FhirResource } from './types.ts';

export interface PatientSummary {
  id: string;
  name: string;
  gender: string;
  birthDate: string;
  test: boolean;
}

export interface PatientDirectory {
  list(): Promise<PatientSummary[]>;
  get(id: string): Promise<PatientSummary | undefined>;
}

interface HumanName { text?: string; given?: string[]; family?: string }

function summarise(patient: FhirResource): PatientSummary {
  const name = (patient.name as HumanName[] | undefined)?.[0];
  return {
    id: String(patient.id),
    name: name?.text ?? ([...(name?.given ?? []), name?.family].filter(Boolean).join(' ') || String(patient.id)),
    gender: String(patient.gender ?? 'unknown'),
    birthDate: String(patient.birthDate ?? 'unknown'),
    test: Boolean(patient.meta?.security?.some((c) => c.code === 'HTEST')),
  };
}

export function storePatientDirectory(store: DemoStore): PatientDirectory {
  return {
    async list() {
      return store.search('Patient', new URLSearchParams()).map(summarise);
    },
    async get(id) {
      const patient = store.read('Patient', id);
      return patient && summarise(patient);
    },
  };
}
