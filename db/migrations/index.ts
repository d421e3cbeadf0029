import type { Knex } from 'knex';
import * as initial from './001_initial.ts';
import * as fhirStore from './002_fhir_store.ts';
import * as auditChain from './003_audit_chain.ts';
import * as auditForwarding from './004_audit_forwarding.ts';
import * as loginThrottle from './005_login_throttle.ts';
import * as derivedColumns from './006_audit_derived_columns.ts';
import * as signIn from './007_sign_in.ts';
import * as sandbox from './008_sandbox.ts';
import * as ehrLaunchUser from './009_ehr_launch_user.ts';
import * as totpSetUpSession from './010_totp_set_up_session.ts';

export interface Migration {
  name: string;
  up(db: Knex): Promise<void>;
  down(db: Knex): Promise<void>;
}

export const migrations: Migration[] = [
  { name: '001_initial', ...initial },
  { name: '002_fhir_store', ...fhirStore },
  { name: '003_audit_chain', ...auditChain },
  { name: '004_audit_forwarding', ...auditForwarding },
  { name: '005_login_throttle', ...loginThrottle },
  { name: '006_audit_derived_columns', ...derivedColumns },
  { name: '007_sign_in', ...signIn },
  { name: '008_sandbox', ...sandbox },
  { name: '009_ehr_launch_user', ...ehrLaunchUser },
  { name: '010_totp_set_up_session', ...totpSetUpSession },
];
