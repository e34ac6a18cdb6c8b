/** What both kinds of JWT the token endpoint accepts (user tokens, client assertions) must respect. */

/** Headers that let a token name its own keys or demand unknown processing: refused outright. */
export const FORBIDDEN_JWT_HEADERS = ['jku', 'x5u', 'x5c', 'jwk', 'crit'] as const;

/** Clock skew tolerated on exp, nbf and iat. */
export const CLOCK_TOLERANCE_S = 30;
