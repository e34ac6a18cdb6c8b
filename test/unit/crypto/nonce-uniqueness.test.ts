/**
 * AES-GCM fails catastrophically if a (key, nonce) pair ever repeats. Each seal derives its key from the data
 * key and a fresh 32-byte salt and draws a fresh 12-byte IV, so under one data key and one binding neither the
 * salt (hence the derived key) nor the (salt, IV) pair may ever repeat: checked over 200,000 seals in npm test,
 * and over a million with `npm run test:long` (about a minute of one core: kept out of npm test's budget).
 */
import crypto from 'node:crypto';
import { openField, sealField, type FieldBinding } from '../../../src/crypto/envelope.js';

const SEALS = process.env.CUSTOS_LONG === '1' ? 1_000_000 : 200_000;
const SALT = [21, 53] as const;
const IV = [53, 65] as const;

describe(`sealField over ${SEALS.toLocaleString('en')} seals under one data key and binding`, () => {
  it('never repeats a salt (a derived key) or an IV, and every envelope still opens', () => {
    const dataKey = crypto.randomBytes(32);
    const binding: FieldBinding = {
      tenantId: crypto.randomUUID(),
      scope: 'connection',
      recordId: crypto.randomUUID(),
      field: 'access_token',
      dataKeyId: crypto.randomUUID(),
    };
    const plaintext = Buffer.from('the same secret every time');
    const salts = new Set<string>();
    const ivs = new Set<string>();
    let sample: Buffer | undefined;
    for (let i = 0; i < SEALS; i++) {
      const envelope = sealField(dataKey, binding, plaintext);
      salts.add(envelope.toString('latin1', ...SALT));
      ivs.add(envelope.toString('latin1', ...IV));
      if (i === SEALS - 1) sample = envelope;
    }
    expect(salts.size).toBe(SEALS);
    expect(ivs.size).toBe(SEALS);
    expect(openField(dataKey, binding, sample!).equals(plaintext)).toBe(true);
  });
});
