/**
 * Architecture rules for src/, checked by dependency-cruiser in `npm run lint`. Today's violations are
 * recorded in .dependency-cruiser-known-violations.json (`npm run lint:baseline`) and ignored with
 * --ignore-known, so lint fails on every new one; that baseline may only shrink. Reading process.env
 * outside src/config/ is not an import, so ESLint checks it (eslint.config.js).
 */
const fs = require('node:fs');
const path = require('node:path');

const KNOWN_VIOLATIONS = path.join(__dirname, '.dependency-cruiser-known-violations.json');
const FOLDER_CYCLES = 'no-circular-between-folders';

/**
 * dependency-cruiser applies --ignore-known to module-level violations only (its
 * soften-known-violations.mjs leaves folder scope as a TODO, still so in 18.x), so this config does it
 * for the folder-level cycle rule: with --ignore-known, a folder edge `from → to` that is already part
 * of a cycle in the baseline is left out of the rule. Any other edge that closes a cycle fails. Without
 * the flag (as `npm run lint:baseline` runs) every folder cycle is reported, so the baseline is rebuilt
 * from the tree and never from itself. dependency-cruiser's cycle search misses a few folder edges that
 * are in a cycle (src/broker → src/config and src/jobs → src/common when the baseline was made), so a
 * change elsewhere can bring one of those up as new although the cycle is old.
 */
function knownFolderCycleEdges() {
  const ignoringKnown = process.argv.some((a) => a === '--ignore-known' || a.startsWith('--ignore-known='));
  if (!ignoringKnown || !fs.existsSync(KNOWN_VIOLATIONS)) return new Map();
  const edges = new Map();
  for (const v of JSON.parse(fs.readFileSync(KNOWN_VIOLATIONS, 'utf8'))) {
    if (v.rule.name !== FOLDER_CYCLES) continue;
    edges.set(v.from, [...(edges.get(v.from) ?? []), v.to]);
  }
  return edges;
}

const anyOf = (names) => `^(${names.map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})$`;

function folderCycleRules() {
  const rule = {
    name: FOLDER_CYCLES,
    severity: 'error',
    comment:
      'Domain folders must not import each other in a circle: a folder is the one place a reader opens ' +
      'for one concern, and folders in a cycle are one concern spread over several places (and none can ' +
      'be tested or moved alone). Move the shared part down (common/) or pass an interface or callback.',
    scope: 'folder',
  };
  const known = knownFolderCycleEdges();
  const from = [...known.keys()];
  return [
    {
      ...rule,
      from: from.length ? { path: '^src(/|$)', pathNot: anyOf(from) } : { path: '^src(/|$)' },
      to: { circular: true },
    },
    ...from.map((f) => ({
      ...rule,
      from: { path: anyOf([f]) },
      to: { circular: true, pathNot: anyOf(known.get(f)) },
    })),
  ];
}

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
    ...folderCycleRules(),
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
        'service, never its table. Also allowed: src/database/ (the data source lists every entity), ' +
        'migrations/, and another entity (a TypeORM relation needs the target class).',
      from: {
        // Group 1 is the importer's domain folder, or just "src/" for the entry points at the top level.
        path: '^(src/[^/]+/|src/)',
        pathNot: ['^src/database/', '^migrations/', '\\.entity\\.ts$'],
      },
      to: { path: '\\.entity\\.ts$', pathNot: '^$1[^/]+\\.entity\\.ts$' },
    },
    {
      name: 'common-and-config-import-no-domain',
      severity: 'error',
      comment:
        'src/common/ and src/config/ are the bottom layer that every domain builds on. If they import a ' +
        'domain folder, every domain depends on every other through them, which is how cycles start.',
      from: { path: '^src/(common|config)/' },
      to: { path: '^src/', pathNot: '^src/(common|config)/' },
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
