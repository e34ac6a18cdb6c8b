/** `npm run example:mcp`: the example MCP server, configured by the environment (see README.md). */
import { ConfigError, startExampleServer } from './server.js';

async function main(): Promise<void> {
  const server = await startExampleServer(process.env);
  let stopping = false;
  const stop = () => {
    if (stopping) process.exit(1);
    stopping = true;
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    // The operator's to fix: one line naming the variable, no stack trace, never a value.
    process.stderr.write(`example-mcp-server: configuration error: ${err.message}\n`);
    process.exit(2);
  }
  const e = err instanceof Error ? err : new Error(String(err));
  process.stderr.write(`example-mcp-server: failed to start: ${e.name}: ${e.message}\n`);
  process.exit(1);
});
