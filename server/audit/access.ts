// What the guard saw of one access, turned into the input of the BALP builders. Pure.
import type { AccessRecord } from '../resource-server/guard.ts';
import { codingList } from '../hcs/codes.ts';
import type { AccessAudit } from './types.ts';

const INTERACTIONS_WITH_CODES = new Set([
  'read', 'vread', 'history-instance', 'history-type', 'history-system', 'search-type', 'search-system',
  'create', 'update', 'patch', 'delete', 'batch', 'transaction', 'capabilities', 'operation',
]);

export function accessAuditFrom(record: AccessRecord, base: string, recorded: Date): AccessAudit {
  const claims = record.token?.claims ?? {};
  const iua = ((claims.extensions as Record<string, unknown> | undefined)?.ihe_iua ?? {}) as Record<string, unknown>;
  const backend = claims.sub === undefined || claims.sub === claims.client_id;
  const query = record.request.query.toString();
  const organization = {
    organization: typeof iua.subject_organization === 'string' ? iua.subject_organization : undefined,
    organizationId: typeof iua.subject_organization_id === 'string' ? iua.subject_organization_id : undefined,
  };
  return {
    recorded,
    requestId: record.requestId ?? '',
    status: record.status,
    method: record.request.method,
    url: `${record.request.path}${query ? `?${query}` : ''}`,
    interaction: record.interaction && INTERACTIONS_WITH_CODES.has(record.interaction.kind) ? record.interaction.kind : undefined,
    type: record.interaction?.type,
    resources: record.resources,
    patients: record.patients,
    resourcePatients: record.resourcePatients,
    server: { base },
    client: {
      id: typeof claims.client_id === 'string' ? claims.client_id : undefined, address: record.request.remoteAddress, issuer: record.token?.issuer,
      ...(record.token && backend && organization),
    },
    user: record.token && !backend ? {
      issuer: record.token.issuer,
      sub: String(claims.sub),
      name: typeof iua.subject_name === 'string' ? iua.subject_name : undefined,
      roles: codingList(iua.subject_role),
      ...organization,
    } : undefined,
    purposeOfUse: codingList(iua.purpose_of_use),
    jti: record.token?.jti,
    securityLabels: record.securityLabels,
    resourceLabels: record.resourceLabels,
  };
}
