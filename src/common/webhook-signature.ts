/**
 * The signature of an outgoing webhook body (a tenant's notifications, the audit trail's forwarding):
 * `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, sent as `Custos-Signature`. The receiver checks
 * the HMAC in constant time and rejects old timestamps to stop replays.
 */
import { createHmac } from 'node:crypto';

export function webhookSignature(secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}
