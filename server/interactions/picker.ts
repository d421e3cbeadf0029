// Which patients the picker lists: those the user may open, test patients (HTEST) only to a user who
// may assert a test purpose, narrowed by a name search. Pure: works whatever the patient source is.
import type { PatientSummary } from '../fhir/patient-directory.ts';

/** Case-insensitive; every word of the query must start a word of the name, or the query is the id. */
export function matchesSearch(patient: PatientSummary, query: string): boolean {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length || patient.id.toLowerCase() === query.trim().toLowerCase()) return true;
  const nameWords = patient.name.toLowerCase().split(/[\s,.]+/);
  return words.every((w) => nameWords.some((n) => n.startsWith(w)));
}

export function pickablePatients(list: readonly PatientSummary[], rules: { mayOpen(id: string): boolean; mayOpenTestData: boolean; query?: string }): PatientSummary[] {
  return list.filter((p) => rules.mayOpen(p.id) && (!p.test || rules.mayOpenTestData) && matchesSearch(p, rules.query ?? ''));
}
