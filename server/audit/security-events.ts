// The authorization server's own security events, recorded through one sink.
import type { User } from '../oidc/users.ts';
import type { AuditSink } from './store.ts';
import { loginFailed, loginSucceeded, logout, userSecurityChanged, type AuditUser, type UserSecurityChanged } from './balp.ts';

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

/** A second-factor step: its method (amr values), and why it failed when it did. */
export function recordSecondFactor(audit: AuditSink, e: { issuer: string; address?: string; clientId?: string; user: User; amr: string[]; failure?: string }) {
  const base = { recorded: new Date(), issuer: e.issuer, address: e.address, clientId: e.clientId, amr: e.amr };
  return audit.append(e.failure
    ? loginFailed({ ...base, username: e.user.username, sub: e.user.id, reason: e.failure })
    : loginSucceeded({ ...base, user: auditUserOf(e.user) }));
}

/** A change to how a user signs in (factor enrolled or removed, password changed). */
export function recordSecurityChange(audit: AuditSink, e: { issuer: string; address?: string; user: User } & Pick<UserSecurityChanged, 'change' | 'what' | 'byAdministrator'>) {
  return audit.append(userSecurityChanged({ recorded: new Date(), issuer: e.issuer, address: e.address, user: auditUserOf(e.user), change: e.change, what: e.what, byAdministrator: e.byAdministrator }));
}

/** A session ended other than by signing out of it (ended from the session list, by a password change, ...). */
export function recordSessionEnded(audit: AuditSink, e: { issuer: string; address?: string; user: User; kind: string; reason: string }) {
  return audit.append(logout({ recorded: new Date(), issuer: e.issuer, address: e.address, user: auditUserOf(e.user), session: { kind: e.kind, reason: e.reason } }));
}
