// The patients the picker and the launcher can list, and the encounters of one, read from the FHIR
// server the guard protects (the bundled store or FHIR_UPSTREAM_URL).
import type { Upstream } from '../resource-server/upstream.ts';
import type { FhirBundle, FhirResource } from './types.ts';
import { patientsOf } from './compartment.ts';

export interface PatientSummary {
  id: string;
  name: string;
  gender: string;
  birthDate: string;
  test: boolean;
}

export interface EncounterSummary {
  id: string;
  patient: string;
  label: string;
}

export interface PatientDirectory {
  list(): Promise<PatientSummary[]>;
  get(id: string): Promise<PatientSummary | undefined>;
  encounters(): Promise<EncounterSummary[]>;
  encounter(id: string): Promise<EncounterSummary | undefined>;
  /** The patients a resource belongs to (none outside the Patient compartment); undefined when the server does not have it. */
  patientsOfResource(type: string, id: string): Promise<string[] | undefined>;
}

interface HumanName { text?: string; given?: string[]; family?: string }

export function summarise(patient: FhirResource): PatientSummary {
  const name = (patient.name as HumanName[] | undefined)?.[0];
  return {
    id: String(patient.id),
    name: name?.text ?? ([...(name?.given ?? []), name?.family].filter(Boolean).join(' ') || String(patient.id)),
    gender: String(patient.gender ?? 'unknown'),
    birthDate: String(patient.birthDate ?? 'unknown'),
    test: Boolean((patient.meta as { security?: { code?: string }[] } | undefined)?.security?.some((c) => c.code === 'HTEST')),
  };
}

function summariseEncounter(encounter: FhirResource): EncounterSummary {
  const patient = String((encounter.subject as { reference?: string } | undefined)?.reference ?? '').replace(/^Patient\//, '');
  const start = (encounter.period as { start?: string } | undefined)?.start ?? '';
  return { id: String(encounter.id), patient, label: `${encounter.id} · Patient/${patient} · ${start}` };
}

const ID = /^[A-Za-z0-9\-.]{1,64}$/;

export function upstreamPatientDirectory(upstream: Upstream): PatientDirectory {
  async function all(type: string): Promise<FhirResource[]> {
    const res = await upstream.send({ method: 'GET', path: `${type}?_count=200` });
    const bundle = res.body as FhirBundle | undefined;
    return res.status === 200 ? (bundle?.entry ?? []).flatMap((e) => (e.resource ? [e.resource as FhirResource] : [])) : [];
  }
  async function one(type: string, id: string): Promise<FhirResource | undefined> {
    if (!ID.test(id)) return undefined;
    const res = await upstream.send({ method: 'GET', path: `${type}/${id}` });
    return res.status === 200 ? (res.body as FhirResource) : undefined;
  }
  return {
    list: async () => (await all('Patient')).map(summarise),
    get: async (id) => {
      const patient = await one('Patient', id);
      return patient && summarise(patient);
    },
    encounters: async () => (await all('Encounter')).map(summariseEncounter),
    encounter: async (id) => {
      const encounter = await one('Encounter', id);
      return encounter && summariseEncounter(encounter);
    },
    patientsOfResource: async (type, id) => {
      const resource = await one(type, id);
      return resource && patientsOf(resource);
    },
  };
}
