/**
 * Architecture rules for src/, checked by dependency-cruiser in `npm run lint`: every rule holds with no
 * exceptions. Reading process.env outside src/config/ is not an import, so ESLint checks it
 * (eslint.config.js). The layering they keep, bottom to top: common; config, database and jobs; audit;
 * crypto; tenants; providers; identity and connections; connect; broker and http; health; the entry points.
 */

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment:
        'Modules must not import each other in a circle: neither side can be understood or tested ' +
        'without the other, and ES modules in a cycle can see each other half-initialised at start-up.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'no-circular-between-folders',
      severity: 'error',
      comment:
        'Domain folders must not import each other in a circle: a folder is the one place a reader opens ' +
        'for one concern, and folders in a cycle are one concern spread over several places (and none can ' +
        'be tested or moved alone). Move the shared part down (common/) or pass an interface or callback.',
      scope: 'folder',
      from: { path: '^src(/|$)' },
      to: { circular: true },
    },
    {
      name: 'controllers-only-from-modules',
      severity: 'error',
      comment:
        'Controllers are the HTTP edge: they turn requests into service calls and results into responses. ' +
        'Only Nest module files (src/app.module.ts, any *.module.ts) wire them in; a service or another ' +
        'controller that imports one depends on HTTP and pulls the whole route into its graph.',
      from: { pathNot: '\\.module\\.ts$' },
      to: { path: '\\.controller\\.ts$' },
    },
    {
      name: 'entities-stay-in-their-domain',
      severity: 'error',
      comment:
        "A table belongs to the domain folder that holds its entity; other domains call that domain's " +
        'service, never its table. Also allowed: src/entities.ts (the list the data source is built with), ' +
        'migrations/, and another entity (a TypeORM relation needs the target class).',
      from: {
        // Group 1 is the importer's domain folder, or just "src/" for the entry points at the top level.
        path: '^(src/[^/]+/|src/)',
        pathNot: ['^src/entities\\.ts$', '^migrations/', '\\.entity\\.ts$'],
      },
      to: { path: '\\.entity\\.ts$', pathNot: '^$1[^/]+\\.entity\\.ts$' },
    },
    {
      name: 'common-and-config-import-no-domain',
      severity: 'error',
      comment:
        'src/common/, src/config/ and src/database/ are the bottom layer that every domain builds on. If ' +
        'they import a domain folder, every domain depends on every other through them, which is how ' +
        'cycles start.',
      from: { path: '^src/(common|config|database)/' },
      to: { path: '^src/', pathNot: '^src/(common|config|database)/' },
    },
    {
      name: 'no-test-or-bench-in-src',
      severity: 'error',
      comment:
        'Test support and benchmarks are not shipped (tsconfig.build.json leaves them out) and may do ' +
        'what production code must not, such as weakening checks or using fixed keys.',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment:
        'Guards the checker itself: an import that dependency-cruiser cannot resolve is an edge that the ' +
        'rules above never see (for instance if the ./x.js specifiers stopped resolving to ./x.ts files).',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // Type-only imports couple folders as much as value imports do, so every rule counts them.
    tsPreCompilationDeps: true,
    // With tsconfig.json, the ESM-style ./x.js specifiers resolve to the ./x.ts files in the tree.
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js', '.json'],
    },
    skipAnalysisNotInRules: true,
  },
};
