// Search narrowing (the model: HAPI FHIR's SearchNarrowingInterceptor): a token bound to patients or to a
// query-restricted scope has its search narrowed before it goes upstream, so the upstream pages hold
// what the token may see (their `total` still counts what labels and consent hide). The guard still filters every answer; narrowing
// only ever adds restrictions (search parameters AND together), so it can hide nothing the filter would
// show except what a type's other compartment links hold. Pure.
import { compartmentParamPaths } from '../fhir/compartment.ts';
import type { View } from './types.ts';

/** Longer patient lists are not sent upstream (the URL would grow without bound); the filter still applies. */
const MAX_PATIENTS = 100;
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** The search parameter that names a resource's patient: `_id` for Patient, else `patient`, else `subject`. */
export function patientParam(type: string): string | undefined {
  if (type === 'Patient') return '_id';
  return ['patient', 'subject'].find((param) => compartmentParamPaths(type, param));
}

export function narrowedSearch(type: string | undefined, params: URLSearchParams, views: readonly View[]): URLSearchParams {
  const narrowed = new URLSearchParams(params);
  if (!type || views.length === 0) return narrowed;
  const bounded = views.every((view) => view.patients !== undefined);
  const patients = [...new Set(views.flatMap((view) => view.patients ?? []))];
  const param = patientParam(type);
  if (bounded && param && patients.length > 0 && patients.length <= MAX_PATIENTS && patients.every((id) => FHIR_ID.test(id))) {
    narrowed.append(param, patients.map((id) => (param === '_id' ? id : `Patient/${id}`)).join(','));
  }
  // One view: its restrictions hold for every result. Several: their union cannot be one query.
  if (views.length === 1) for (const [name, value] of views[0].query) narrowed.append(name, value);
  return narrowed;
}
