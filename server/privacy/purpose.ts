// The purpose-of-use check at the guard: a person's token must carry one purpose of use that the
// roles it carries may assert (the role x purpose-of-use policy). Defence in depth: the
// authorization server already issues only such tokens, but a guard trusts no one's word for it. Pure.
import { codingList } from '../hcs/codes.ts';
import { rolesMayAssert, type HcsPolicy } from '../hcs/policy.ts';
import type { Refusal, TokenContext } from '../resource-server/types.ts';

export function purposeRefusal(policy: HcsPolicy, token: TokenContext): Refusal | undefined {
  if (!token.sub || token.sub === token.clientId) return undefined; // backend services: their registration decides
  const iua = (token.claims.extensions as { ihe_iua?: { purpose_of_use?: unknown; subject_role?: unknown } } | undefined)?.ihe_iua;
  const purposes = codingList(iua?.purpose_of_use);
  if (purposes.length !== 1) return { status: 403, code: 'forbidden', message: 'the token must carry exactly one purpose of use' };
  const purpose = purposes[0].code;
  if (!rolesMayAssert(policy, codingList(iua?.subject_role), purpose)) {
    return { status: 403, code: 'forbidden', message: `purpose of use ${purpose} is not permitted for the user's roles` };
  }
  return undefined;
}
