/** PostgreSQL / Redis / network conditions that mean "try again", never "your credentials are bad". */
const transientPgCodes = new Set([
  '57P01',
  '57P02',
  '57P03',
  '53300',
  '53400',
  '08000',
  '08003',
  '08006',
  '08001',
  '08004',
  // statement_timeout and idle_in_transaction_session_timeout (CUSTOS_DB_STATEMENT_TIMEOUT_MS).
  '57014',
  '25P03',
]);
const transientErrnos = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
]);

export function isInfrastructureError(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as { code?: unknown; message?: unknown; driverError?: unknown; cause?: unknown };
  if (typeof e.code === 'string' && (transientPgCodes.has(e.code) || transientErrnos.has(e.code)))
    return true;
  const msg = typeof e.message === 'string' ? e.message : '';
  if (
    /Connection terminated|connection timeout|timeout exceeded when trying to connect|Connection is closed|Client has encountered a connection error|Query read timeout|statement abandoned/i.test(
      msg,
    )
  )
    return true;
  if (e.driverError && e.driverError !== err && isInfrastructureError(e.driverError)) return true;
  if (e.cause && e.cause !== err && isInfrastructureError(e.cause)) return true;
  if (err instanceof AggregateError) return err.errors.some(isInfrastructureError);
  return false;
}
