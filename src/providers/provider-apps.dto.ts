import { z } from 'zod';
import { scopeTokenSchema } from '../common/validation.js';

const printable = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces');

/** A private JWK for private_key_jwt client authentication at the provider (RSA or EC, with its `d`). */
const privateJwkSchema = z
  .record(z.string(), z.unknown())
  .refine((k) => (k.kty === 'RSA' || k.kty === 'EC' || k.kty === 'OKP') && typeof k.d === 'string', {
    message: 'must be a private RSA, EC or OKP JWK (with "d")',
  })
  .refine((k) => JSON.stringify(k).length <= 16 * 1024, { message: 'is too large' });

export const saveProviderAppSchema = z.strictObject({
  clientId: printable(512),
  clientSecret: printable(4096).optional(),
  scopes: z.array(scopeTokenSchema).max(100).optional(),
  privateKeyJwk: privateJwkSchema.optional(),
});
export type SaveProviderAppInput = z.output<typeof saveProviderAppSchema>;
