/** The worker entry point: `node dist/src/worker.js` is `CUSTOS_ROLE=worker node dist/src/main.js`. */
process.env.CUSTOS_ROLE = 'worker';
await import('./main.js');
