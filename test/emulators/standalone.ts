/**
 * Runs the KMS or Vault emulator on its own, for trying Custos's BYOK configuration by hand:
 *
 *   node --import tsx test/emulators/standalone.ts kms   [--port N] [--host H]
 *   node --import tsx test/emulators/standalone.ts vault [--port N] [--host H]
 *
 * Prints, on start, the exact body of `PUT /v1/tenants/{tenantId}/key-backend` for this emulator (endpoint, key,
 * region and credentials, all generated now, never fixed) as a JSON block, the allow-list setting Custos needs to
 * reach a loopback address, and the curl line (with the quickstart's BASE, TENANT and TENANT_KEY), then stays up until
 * Ctrl-C. State lives in memory only.
 */
import crypto from 'node:crypto';
import { startKmsEmulator } from './kms-emulator.js';
import { startVaultEmulator } from './vault-emulator.js';

const USAGE = 'usage: node --import tsx test/emulators/standalone.ts kms|vault [--port N] [--host H]\n';

function parseArgs(argv: string[]): { kind: 'kms' | 'vault'; port: number; host: string } | undefined {
  const [kind, ...rest] = argv;
  if (kind !== 'kms' && kind !== 'vault') return undefined;
  let port = kind === 'kms' ? 4599 : 8200;
  let host = '127.0.0.1';
  for (let i = 0; i < rest.length; i += 2) {
    const value = rest[i + 1];
    if (rest[i] === '--port' && value !== undefined && /^\d+$/.test(value) && Number(value) < 65536) {
      port = Number(value);
    } else if (rest[i] === '--host' && value !== undefined) {
      host = value;
    } else {
      return undefined;
    }
  }
  return { kind, port, host };
}

function print(lines: string[]): void {
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** The body as a JSON block to paste, and the lines that send it to Custos. */
function keyBackendLines(host: string, port: number, body: Record<string, unknown>): string[] {
  const allow = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  return [
    'Key backend configuration: the body of PUT /v1/tenants/{tenantId}/key-backend',
    '',
    JSON.stringify(body, null, 2),
    '',
    'Custos refuses loopback and private addresses unless allowed: start it with',
    `  CUSTOS_OUTBOUND_ALLOW_HOSTS=${allow} npm start`,
    '',
    'Then, with BASE, TENANT and TENANT_KEY set (docs/quickstart.md):',
    '  curl -sS -X PUT "$BASE/v1/tenants/$TENANT/key-backend" \\',
    `    -H "Authorization: Bearer $TENANT_KEY" -H 'Content-Type: application/json' \\`,
    `    -d '${JSON.stringify(body)}'`,
  ];
}

async function runKms(port: number, host: string): Promise<() => Promise<void>> {
  const credentials = {
    accessKeyId: `AKIA${crypto.randomBytes(8).toString('hex').toUpperCase()}`,
    secretAccessKey: crypto.randomBytes(30).toString('base64'),
  };
  const region = 'us-east-1';
  const kms = await startKmsEmulator({ port, host, region, credentials: [credentials] });
  const key = kms.createKey({ description: 'custos standalone', alias: 'alias/custos' });
  print([
    `AWS KMS emulator listening on ${kms.url} (SigV4 signatures are verified)`,
    '',
    ...keyBackendLines(host, kms.port, {
      type: 'aws-kms',
      keyId: key.arn,
      region,
      endpoint: kms.url,
      credentials,
    }),
    '',
    'The key also answers to its alias, alias/custos. AWS CLI:',
    `  AWS_ACCESS_KEY_ID=${credentials.accessKeyId} AWS_SECRET_ACCESS_KEY='${credentials.secretAccessKey}' \\`,
    `  AWS_EC2_METADATA_DISABLED=true aws --endpoint-url ${kms.url} --region ${region} kms describe-key \\`,
    `    --key-id alias/custos`,
    '',
    'Ctrl-C to stop.',
  ]);
  return () => kms.close();
}

async function runVault(port: number, host: string): Promise<() => Promise<void>> {
  const vault = await startVaultEmulator({ port, host });
  vault.createTransitKey('custos');
  const roleId = crypto.randomUUID();
  const secretId = crypto.randomUUID();
  vault.addAppRole(roleId, secretId, ['transit/encrypt/custos', 'transit/decrypt/custos']);
  print([
    `Vault emulator listening on ${vault.url}`,
    '',
    ...keyBackendLines(host, vault.port, {
      type: 'vault-transit',
      address: vault.url,
      mount: 'transit',
      keyName: 'custos',
      token: vault.rootToken,
    }),
    '',
    'The token is the root token (allowed everywhere, rotation included). With AppRole instead (allowed:',
    'transit/encrypt/custos and transit/decrypt/custos), replace "token" with:',
    `  "appRole": ${JSON.stringify({ roleId, secretId })}`,
    '',
    'Vault CLI:',
    `  VAULT_ADDR=${vault.url} VAULT_TOKEN=${vault.rootToken} vault read transit/keys/custos`,
    '',
    'Ctrl-C to stop.',
  ]);
  return () => vault.close();
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (!args) {
    process.stderr.write(USAGE);
    process.exitCode = 2;
    return;
  }
  const close =
    args.kind === 'kms' ? await runKms(args.port, args.host) : await runVault(args.port, args.host);
  const stop = (): void => {
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
