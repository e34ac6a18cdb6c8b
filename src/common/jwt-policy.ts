/** What every JWT Custos accepts must respect: users' tokens, ID tokens and connectors' client assertions. */

/** Headers that let a token name its own keys or demand unknown processing: refused outright. */
export const FORBIDDEN_JWT_HEADERS = ['jku', 'x5u', 'x5c', 'jwk', 'crit'] as const;

/** Clock skew tolerated on exp, nbf and iat. */
export const CLOCK_TOLERANCE_S = 30;

/** The JWS algorithms Custos accepts, for every JWT above: asymmetric only, never HS* or none. */
export const SIGNING_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const;
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];
