// The authorization server's own security events, recorded through one sink.
import type { User } from '../oidc/users.ts';
import type { AuditSink } from './store.ts';
import { loginFailed, loginSucceeded, logout, type AuditUser } from './balp.ts';

export function auditUserOf(user: User): AuditUser {
  return {
    sub: user.id,
    name: user.name,
    roles: user.attributes.roles ?? [],
    organization: user.attributes.organization,
    organizationId: user.attributes.organizationId,
  };
}

/** A login attempt: the user when it succeeded, the name tried (never the password) when it failed. */
export function recordLogin(audit: AuditSink, e: { issuer: string; address?: string; clientId?: string; username: string; user?: User }) {
  const base = { recorded: new Date(), issuer: e.issuer, address: e.address, clientId: e.clientId };
  return audit.append(e.user
    ? loginSucceeded({ ...base, user: auditUserOf(e.user) })
    : loginFailed({ ...base, username: e.username.slice(0, 128), reason: 'unknown user, wrong password or disabled account' }));
}

export function recordLogout(audit: AuditSink, e: { issuer: string; address?: string; user: User }) {
  return audit.append(logout({ recorded: new Date(), issuer: e.issuer, address: e.address, user: auditUserOf(e.user) }));
}
