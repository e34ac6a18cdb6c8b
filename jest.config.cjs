// Jest runs in CommonJS mode; @swc/jest compiles src, test and the ESM-only node_modules to CommonJS.
const swc = {
  jsc: {
    parser: { syntax: 'typescript', decorators: true },
    transform: { legacyDecorator: true, decoratorMetadata: true, useDefineForClassFields: false },
    target: 'es2022',
    keepClassNames: true,
  },
  module: { type: 'commonjs' },
};

module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  // The long fault runs (npm run test:faults) stay out of npm test.
  testPathIgnorePatterns: [
    '/node_modules/',
    ...(process.env.CUSTOS_FAULTS === '1' ? [] : ['<rootDir>/test/faults/']),
  ],
  transform: { '^.+\\.(t|j|mj)s$': ['@swc/jest', swc] },
  transformIgnorePatterns: [],
  moduleNameMapper: {
    '^(\\.{1,2}/.*)\\.js$': '$1',
    // The SDK (sdk/) and the example import it by its package name; tests run its source.
    '^@custos/sdk$': '<rootDir>/sdk/src/index.ts',
    '^@custos/sdk/(.*)$': '<rootDir>/sdk/src/$1.ts',
    // Its package.json exports only an "import" condition, which Jest's CommonJS resolver does not take.
    '^canonicalize$': '<rootDir>/node_modules/canonicalize/lib/canonicalize.js',
  },
  moduleFileExtensions: ['ts', 'js', 'mjs', 'cjs', 'json'],
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  testTimeout: 30000,
  maxWorkers: 2,
};
