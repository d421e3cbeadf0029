// The bounds on how long tokens live, which settings, key retirement and revocation all rely on.

/** The longest ACCESS_TOKEN_TTL allowed (a day): no access token lives longer. */
export const MAX_ACCESS_TOKEN_TTL = 86_400;

/** id tokens live an hour. */
export const ID_TOKEN_TTL = 3600;

/** The clock difference tolerated when a token's times are checked. */
export const CLOCK_SKEW = 60;
