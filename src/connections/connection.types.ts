/** A connection's kind and state: the values of connections.type and connections.status. */
export type ConnectionType = 'api_key' | 'oauth2';
export type ConnectionStatus = 'active' | 'expired' | 'needs_reauth' | 'revoked';
