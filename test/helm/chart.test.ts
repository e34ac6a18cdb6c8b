/**
 * The Helm chart (helm/custos), rendered as `helm template` renders it by test/helm/render (Go's
 * text/template with sprig and helm's own functions, from Debian's Go packages; there is no helm binary
 * here), every object checked against Kubernetes' schemas with unknown fields refused, and the chart's
 * promises: hardened pods, probes, migrations as a hook with the owner's URL kept from the app pods, the HA
 * example's autoscaler, budgets and ingress, and values.schema.json.
 *
 * Needs Go and Debian's Go packages (.ci/run installs them). Without them this file fails, saying so; it is
 * skipped only when CUSTOS_SKIP_HELM=1 is set on purpose.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { parse as parseYaml } from 'yaml';
import type { IContainer, IPodSpec } from 'kubernetes-models/v1';
import { loadConfig, variables } from '../../src/config/config.js';
import {
  buildRenderer,
  chartDir,
  containerEnv,
  parseStream,
  repoRoot,
  runRenderer,
  splitStream,
  validateObject,
  type KubeObject,
  type Rendered,
} from './support.js';

const skip = process.env.CUSTOS_SKIP_HELM === '1';
if (skip) process.stderr.write('Helm chart tests skipped: CUSTOS_SKIP_HELM=1\n');
const describeHelm = skip ? describe.skip : describe;

const APP_URL = 'postgres://custos_app:app-secret-pw@db.example.internal:5432/custos';
const OWNER_URL = 'postgres://custos_owner:owner-secret-pw@db.example.internal:5432/custos';
const ROOT_KEYS = `v1:${Buffer.alloc(32, 7).toString('base64')}`;
const HA_EXAMPLE = path.join(chartDir, 'examples/values-ha.yaml');
/** What the HA example's existingSecret holds, for resolving the pods' environment. */
const HA_SECRET = {
  DATABASE_URL: APP_URL,
  CUSTOS_MIGRATION_DATABASE_URL: OWNER_URL,
  CUSTOS_ROOT_KEYS: ROOT_KEYS,
  REDIS_URL: 'rediss://:redis-secret-pw@redis.example.internal:6379',
  CUSTOS_BOOTSTRAP_ADMIN_KEY: 'b'.repeat(43),
};

type Values = Record<string, unknown>;

interface Workload {
  spec: {
    template: {
      metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
      spec: IPodSpec;
    };
  };
}

describeHelm('the Helm chart', () => {
  let binary: string;
  let tmp: string;
  let schemaCheck: ValidateFunction;

  const valuesFile = (values: Values): string => {
    const file = path.join(tmp, `values-${fs.readdirSync(tmp).length}.json`);
    // JSON is YAML: helm reads it the same way.
    fs.writeFileSync(file, JSON.stringify(values));
    return file;
  };
  const args = (files: string[], extra: string[] = [], chart = chartDir) => [
    '-chart',
    chart,
    ...files.flatMap((f) => ['-f', f]),
    ...extra,
  ];
  /** Renders, failing the test on any template error, and validates every object. */
  const render = (files: string[], chart = chartDir, extra: string[] = []): Rendered[] => {
    const r = runRenderer(binary, args(files, extra, chart));
    if (r.status !== 0) throw new Error(`render failed (${r.status}): ${r.stderr}`);
    const rendered = parseStream(r.stdout);
    const unknown = rendered.flatMap(({ object }) => validateObject(object));
    expect(unknown).toEqual([]);
    const ids = rendered.map(({ object }) => `${object.kind}/${object.metadata.name}`);
    expect(new Set(ids).size).toBe(ids.length);
    return rendered;
  };
  const renderError = (files: string[]): string => {
    const r = runRenderer(binary, args(files));
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe('');
    return r.stderr;
  };
  const mergedValues = (files: string[]): Values => {
    const r = runRenderer(binary, args(files, ['-dump-values']));
    if (r.status !== 0) throw new Error(r.stderr);
    return JSON.parse(r.stdout) as Values;
  };
  const notes = (files: string[]): string => {
    const r = runRenderer(binary, args(files, ['-notes']));
    if (r.status !== 0) throw new Error(r.stderr);
    return r.stdout;
  };
  const objects = (rendered: Rendered[]) => rendered.map((r) => r.object);
  const find = (rendered: Rendered[], kind: string, name: string): KubeObject => {
    const o = rendered.find((r) => r.object.kind === kind && r.object.metadata.name === name)?.object;
    if (!o)
      throw new Error(
        `no ${kind}/${name} among ${rendered.map((r) => `${r.object.kind}/${r.object.metadata.name}`).join(', ')}`,
      );
    return o;
  };
  const workload = (o: KubeObject) => o as unknown as Workload;
  const container = (o: KubeObject): IContainer => {
    const containers = workload(o).spec.template.spec.containers;
    expect(containers).toHaveLength(1);
    return containers[0];
  };
  const kinds = (rendered: Rendered[]) =>
    rendered.map(({ object }) => `${object.kind}/${object.metadata.name}`).sort();

  const minimal = (): Values => ({
    database: { url: APP_URL, migrationUrl: OWNER_URL },
    rootKeys: ROOT_KEYS,
  });

  beforeAll(() => {
    binary = buildRenderer();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-helm-test-'));
    const schema = JSON.parse(fs.readFileSync(path.join(chartDir, 'values.schema.json'), 'utf8')) as object;
    schemaCheck = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile(schema);
  }, 180_000);

  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  describe('with the default values and a database', () => {
    let rendered: Rendered[];
    beforeAll(() => {
      rendered = render([valuesFile(minimal())]);
    });

    it('renders one api and one worker pod, their Service, config, secrets, the migration hook and network policies', () => {
      expect(kinds(rendered)).toEqual([
        'ConfigMap/custos',
        'Deployment/custos-api',
        'Deployment/custos-worker',
        'Job/custos-migrate',
        'NetworkPolicy/custos-api',
        'NetworkPolicy/custos-worker',
        'Secret/custos',
        'Secret/custos-migrations',
        'Service/custos-api',
        'ServiceAccount/custos',
      ]);
      expect((find(rendered, 'Deployment', 'custos-api').spec as { replicas: number }).replicas).toBe(1);
      expect((find(rendered, 'Deployment', 'custos-worker').spec as { replicas: number }).replicas).toBe(1);
    });

    it('prints every document with its # Source: template', () => {
      for (const { source } of rendered) expect(source).toMatch(/^custos\/templates\/[a-z-]+\.yaml$/);
    });

    it('gives Kubernetes what the YAML says: Go reads every document as the JavaScript YAML 1.1 parser does', () => {
      const r = runRenderer(binary, args([valuesFile(minimal())], ['-o', 'json']));
      expect(r.status).toBe(0);
      const fromGo = r.stdout
        .trim()
        .split('\n')
        .map((line) => (JSON.parse(line) as { object: KubeObject }).object);
      expect(fromGo).toEqual(objects(rendered));
    });

    it('runs api and worker pods non-root, read-only, without privileges or capabilities, under RuntimeDefault seccomp', () => {
      for (const name of ['custos-api', 'custos-worker']) {
        const d = find(rendered, 'Deployment', name);
        const pod = workload(d).spec.template.spec;
        expect(pod.securityContext).toMatchObject({
          runAsNonRoot: true,
          runAsUser: 10001,
          seccompProfile: { type: 'RuntimeDefault' },
        });
        expect(pod.automountServiceAccountToken).toBe(false);
        expect(pod.enableServiceLinks).toBe(false);
        const c = container(d);
        expect(c.securityContext).toEqual({
          runAsNonRoot: true,
          runAsUser: 10001,
          runAsGroup: 10001,
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          privileged: false,
          capabilities: { drop: ['ALL'] },
          seccompProfile: { type: 'RuntimeDefault' },
        });
        // The one writable place: /tmp, which holds the data folder.
        expect(c.volumeMounts).toEqual([{ name: 'tmp', mountPath: '/tmp' }]);
        expect(pod.volumes).toEqual([{ name: 'tmp', emptyDir: { sizeLimit: '64Mi' } }]);
      }
    });

    it('probes liveness at /healthz, readiness at /readyz and start-up at /healthz on the http port', () => {
      for (const name of ['custos-api', 'custos-worker']) {
        const c = container(find(rendered, 'Deployment', name));
        expect(c.ports).toEqual([{ name: 'http', containerPort: 8080, protocol: 'TCP' }]);
        expect(c.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'http' });
        expect(c.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'http' });
        expect(c.startupProbe?.httpGet).toEqual({ path: '/healthz', port: 'http' });
        // /readyz gives each check 2 s: the probe waits longer than that.
        expect(c.readinessProbe?.timeoutSeconds).toBeGreaterThan(2);
        expect(
          (c.startupProbe?.periodSeconds ?? 0) * (c.startupProbe?.failureThreshold ?? 0),
        ).toBeGreaterThanOrEqual(60);
      }
    });

    it('starts the image with the V8 flags of npm start, with resource requests and limits', () => {
      const pkg = JSON.parse(fs.readFileSync(path.join(chartDir, '../../package.json'), 'utf8')) as {
        config: { nodeFlags: string };
      };
      for (const name of ['custos-api', 'custos-worker']) {
        const c = container(find(rendered, 'Deployment', name));
        expect(c.image).toBe('custos:0.1.0');
        expect(c.command).toEqual(['node', ...pkg.config.nodeFlags.split(' '), 'dist/src/main.js']);
        expect(c.resources?.requests).toEqual(
          expect.objectContaining({ cpu: expect.any(String), memory: expect.any(String) }),
        );
        expect(c.resources?.limits).toEqual(expect.objectContaining({ memory: expect.any(String) }));
      }
    });

    it('gives each Deployment its role, never runs migrations in app pods, and Custos accepts the configuration', () => {
      for (const role of ['api', 'worker'] as const) {
        const env = containerEnv(
          container(find(rendered, 'Deployment', `custos-${role}`)),
          objects(rendered),
        );
        // Every variable the chart sets is one Custos reads (src/config/config.ts).
        for (const name of Object.keys(env)) expect(Object.keys(variables)).toContain(name);
        const config = loadConfig(env);
        expect(config).toMatchObject({
          role,
          migrationsRun: false,
          host: '0.0.0.0',
          port: 8080,
          databaseUrl: APP_URL,
          rootKeys: ROOT_KEYS,
          migrationDatabaseUrl: undefined,
          redisUrl: undefined,
          dbPoolSize: 10,
        });
        expect(config.dataDir).toBe('/tmp/custos');
      }
    });

    it('runs the migrations as a pre-install and pre-upgrade hook, as the schema owner, deleted once it succeeded', () => {
      const job = find(rendered, 'Job', 'custos-migrate');
      expect(job.metadata.annotations).toMatchObject({
        'helm.sh/hook': 'pre-install,pre-upgrade',
        'helm.sh/hook-delete-policy': 'before-hook-creation,hook-succeeded',
      });
      const pod = workload(job).spec.template.spec;
      expect(pod.restartPolicy).toBe('Never');
      expect(pod.automountServiceAccountToken).toBe(false);
      expect(pod.serviceAccountName).toBeUndefined();
      const c = container(job);
      expect(c.command).toEqual(['node', 'dist/src/cli.js', 'migrate']);
      expect(c.securityContext).toMatchObject({
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
      });
      const config = loadConfig(containerEnv(c, objects(rendered)));
      expect(config).toMatchObject({ databaseUrl: APP_URL, migrationDatabaseUrl: OWNER_URL });

      // The Job's Secret is a hook too, created before it: on install the release's own resources come after.
      const secret = find(rendered, 'Secret', 'custos-migrations');
      const weight = (o: KubeObject) => Number(o.metadata.annotations?.['helm.sh/hook-weight'] ?? 0);
      expect(secret.metadata.annotations?.['helm.sh/hook']).toBe('pre-install,pre-upgrade');
      expect(secret.metadata.annotations?.['helm.sh/hook-delete-policy']).toContain('hook-succeeded');
      expect(weight(secret)).toBeLessThan(weight(job));
      const hooks = rendered.filter((r) => r.object.metadata.annotations?.['helm.sh/hook']);
      expect(hooks.map((h) => h.object.metadata.name)).toEqual(['custos-migrations', 'custos-migrate']);
    });

    it('never gives the app pods, their Secret or their ConfigMap the migration URL', () => {
      const appObjects = objects(rendered).filter((o) => !o.metadata.annotations?.['helm.sh/hook']);
      for (const o of appObjects) {
        const text = JSON.stringify(o);
        const decoded =
          o.kind === 'Secret'
            ? Object.values((o.data ?? {}) as Record<string, string>).map((v) =>
                Buffer.from(v, 'base64').toString(),
              )
            : [];
        expect(text).not.toContain('CUSTOS_MIGRATION_DATABASE_URL');
        expect(text).not.toContain('owner-secret-pw');
        expect(decoded.join('\n')).not.toContain('owner-secret-pw');
      }
    });

    it('keeps secrets out of the ConfigMap and passes them key by key, never a whole Secret', () => {
      const cm = find(rendered, 'ConfigMap', 'custos');
      const data = cm.data as Record<string, string>;
      const sensitive = Object.entries(variables)
        .filter(([, spec]) => spec.sensitive)
        .map(([name]) => name);
      for (const name of sensitive) expect(Object.keys(data)).not.toContain(name);
      expect(JSON.stringify(cm)).not.toContain('secret-pw');
      for (const o of objects(rendered)) expect(JSON.stringify(o)).not.toMatch(/"secretRef"/);
      expect(find(rendered, 'Secret', 'custos').type).toBe('Opaque');
    });

    it('admits traffic to the http port only and allows egress', () => {
      for (const name of ['custos-api', 'custos-worker']) {
        const np = find(rendered, 'NetworkPolicy', name).spec as {
          podSelector: { matchLabels: Record<string, string> };
          policyTypes: string[];
          ingress: { ports: unknown[]; from?: unknown[] }[];
          egress: unknown[];
        };
        expect(np.policyTypes).toEqual(['Ingress', 'Egress']);
        expect(np.ingress).toEqual([{ ports: [{ port: 'http', protocol: 'TCP' }] }]);
        expect(np.egress).toEqual([{}]);
        const labels = workload(find(rendered, 'Deployment', name)).spec.template.metadata.labels;
        expect(labels).toMatchObject(np.podSelector.matchLabels);
      }
    });

    it('selects the api pods from the Service, and only them', () => {
      const svc = find(rendered, 'Service', 'custos-api').spec as {
        selector: Record<string, string>;
        ports: unknown[];
      };
      expect(svc.ports).toEqual([{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }]);
      const api = workload(find(rendered, 'Deployment', 'custos-api')).spec.template.metadata.labels;
      const worker = workload(find(rendered, 'Deployment', 'custos-worker')).spec.template.metadata.labels;
      expect(api).toMatchObject(svc.selector);
      expect(worker).not.toMatchObject(svc.selector);
    });

    it('rolls the pods when the configuration or the Secret changes', () => {
      const annotations = (files: string[]) =>
        workload(find(render(files), 'Deployment', 'custos-api')).spec.template.metadata.annotations ?? {};
      const before = annotations([valuesFile(minimal())]);
      const after = annotations([
        valuesFile(minimal()),
        valuesFile({ logLevel: 'debug', bootstrapAdminKey: 'k'.repeat(40) }),
      ]);
      expect(before['checksum/config']).toMatch(/^[0-9a-f]{64}$/);
      expect(after['checksum/config']).not.toBe(before['checksum/config']);
      expect(after['checksum/secret']).not.toBe(before['checksum/secret']);
    });

    it('prints notes that warn about the missing public URL and say where the first admin key is', () => {
      const text = notes([valuesFile(minimal())]);
      expect(text).toContain('kubectl -n default port-forward svc/custos-api 8080:80');
      expect(text).toContain('publicUrl is empty');
      expect(text).toContain('/tmp/custos/bootstrap-admin-key');
    });

    it('matches values.schema.json, merged with the defaults as helm validates them', () => {
      expect(schemaCheck(mergedValues([valuesFile(minimal())]))).toBe(true);
    });
  });

  describe('the HA example (helm/custos/examples/values-ha.yaml)', () => {
    let rendered: Rendered[];
    beforeAll(() => {
      rendered = render([HA_EXAMPLE]);
    });

    it('matches values.schema.json', () => {
      const ok = schemaCheck(mergedValues([HA_EXAMPLE]));
      expect(schemaCheck.errors ?? []).toEqual([]);
      expect(ok).toBe(true);
    });

    it('renders no Secret: everything sensitive comes from existingSecret', () => {
      expect(rendered.filter((r) => r.object.kind === 'Secret')).toEqual([]);
      const refs = objects(rendered)
        .flatMap((o) => JSON.stringify(o).match(/"secretKeyRef":\{[^}]*\}/g) ?? [])
        .map((ref) => (JSON.parse(ref.slice('"secretKeyRef":'.length)) as { name: string }).name);
      expect(refs.length).toBeGreaterThan(0);
      expect(new Set(refs)).toEqual(new Set(['custos-secrets']));
    });

    it('autoscales the api from 3 to 10 pods on CPU, with the Deployment leaving replicas to the autoscaler', () => {
      const hpa = find(rendered, 'HorizontalPodAutoscaler', 'custos-api').spec as {
        scaleTargetRef: { apiVersion: string; kind: string; name: string };
        minReplicas: number;
        maxReplicas: number;
        metrics: { resource: { name: string; target: { type: string; averageUtilization: number } } }[];
      };
      expect(hpa.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'custos-api' });
      expect([hpa.minReplicas, hpa.maxReplicas]).toEqual([3, 10]);
      expect(hpa.metrics.map((m) => m.resource.name)).toEqual(['cpu']);
      const api = find(rendered, 'Deployment', 'custos-api').spec as { replicas?: number };
      expect(api.replicas).toBeUndefined();
      expect(container(find(rendered, 'Deployment', 'custos-api')).resources?.requests?.cpu).toBeDefined();
      expect((find(rendered, 'Deployment', 'custos-worker').spec as { replicas: number }).replicas).toBe(2);
    });

    it('has a disruption budget for the api and the worker, each selecting its own pods', () => {
      for (const name of ['custos-api', 'custos-worker']) {
        const pdb = find(rendered, 'PodDisruptionBudget', name).spec as {
          maxUnavailable: number;
          selector: { matchLabels: Record<string, string> };
        };
        expect(pdb.maxUnavailable).toBe(1);
        const labels = workload(find(rendered, 'Deployment', name)).spec.template.metadata.labels;
        expect(labels).toMatchObject(pdb.selector.matchLabels);
        const other = workload(
          find(rendered, 'Deployment', name === 'custos-api' ? 'custos-worker' : 'custos-api'),
        );
        expect(other.spec.template.metadata.labels).not.toMatchObject(pdb.selector.matchLabels);
      }
    });

    it('routes the public paths of the TLS host to the api Service, and not /metrics', () => {
      const ingress = find(rendered, 'Ingress', 'custos-api').spec as {
        ingressClassName: string;
        tls: { secretName: string; hosts: string[] }[];
        rules: {
          host: string;
          http: {
            paths: { path: string; backend: { service: { name: string; port: { number: number } } } }[];
          };
        }[];
      };
      expect(ingress.tls).toEqual([{ secretName: 'custos-tls', hosts: ['custos.example.com'] }]);
      expect(ingress.rules.map((r) => r.host)).toEqual(['custos.example.com']);
      const paths = ingress.rules[0].http.paths;
      expect(paths.map((p) => p.path)).toEqual(['/oauth', '/connect', '/v1']);
      for (const p of paths) expect(p.backend.service).toEqual({ name: 'custos-api', port: { number: 80 } });
    });

    it('gives pods Redis and the IRSA role, and the ingress host as the public URL', () => {
      const sa = find(rendered, 'ServiceAccount', 'custos');
      expect(sa.metadata.annotations).toEqual({
        'eks.amazonaws.com/role-arn': 'arn:aws:iam::123456789012:role/custos-kms',
      });
      for (const role of ['api', 'worker'] as const) {
        const d = find(rendered, 'Deployment', `custos-${role}`);
        expect(workload(d).spec.template.spec.serviceAccountName).toBe('custos');
        const config = loadConfig(
          containerEnv(container(d), objects(rendered), { 'custos-secrets': HA_SECRET }),
        );
        expect(config).toMatchObject({
          role,
          redisUrl: HA_SECRET.REDIS_URL,
          publicUrl: 'https://custos.example.com',
          trustProxy: 1,
          migrationDatabaseUrl: undefined,
          bootstrapAdminKey: HA_SECRET.CUSTOS_BOOTSTRAP_ADMIN_KEY,
        });
        expect(config.awsAmbientKeyArns).toHaveLength(1);
      }
    });

    it('reads the owner URL, if the Secret has one, in the migration Job only', () => {
      const job = container(find(rendered, 'Job', 'custos-migrate'));
      const ownerRef = job.env?.find((e) => e.name === 'CUSTOS_MIGRATION_DATABASE_URL')?.valueFrom
        ?.secretKeyRef;
      expect(ownerRef).toEqual({
        name: 'custos-secrets',
        key: 'CUSTOS_MIGRATION_DATABASE_URL',
        optional: true,
      });
      for (const role of ['api', 'worker']) {
        const env = container(find(rendered, 'Deployment', `custos-${role}`)).env ?? [];
        expect(env.map((e) => e.name)).not.toContain('CUSTOS_MIGRATION_DATABASE_URL');
      }
    });

    it('spreads pods over zones with their own selector filled in', () => {
      const pod = workload(find(rendered, 'Deployment', 'custos-api')).spec.template;
      const constraints = pod.spec.topologySpreadConstraints ?? [];
      expect(constraints.map((c) => c.topologyKey)).toEqual([
        'topology.kubernetes.io/zone',
        'kubernetes.io/hostname',
      ]);
      for (const c of constraints)
        expect(pod.metadata.labels).toMatchObject(c.labelSelector?.matchLabels ?? { missing: 'selector' });
    });

    it('restricts egress to DNS and the listed rules, and ingress to named peers', () => {
      const api = find(rendered, 'NetworkPolicy', 'custos-api').spec as {
        ingress: { ports: unknown[]; from: unknown[] }[];
        egress: { to: unknown[]; ports: { port: number; protocol: string }[] }[];
      };
      expect(api.ingress).toHaveLength(1);
      expect(api.ingress[0].ports).toEqual([{ port: 'http', protocol: 'TCP' }]);
      expect(api.ingress[0].from).toHaveLength(2);
      expect(api.egress[0].ports).toEqual([
        { port: 53, protocol: 'UDP' },
        { port: 53, protocol: 'TCP' },
      ]);
      expect(api.egress.flatMap((r) => r.ports.map((p) => p.port))).toEqual([53, 53, 5432, 6379, 443]);
      expect(JSON.stringify(api.egress)).not.toMatch(/"to":\[\{\}\]|^\[\{\}\]$/);
    });

    it('prints notes with the public URL and no warning', () => {
      const text = notes([HA_EXAMPLE]);
      expect(text).toContain('https://custos.example.com');
      expect(text).not.toContain('WARNING');
    });
  });

  describe('with audit retention', () => {
    it('gives the owner URL to the worker, which removes old months as the owner, and still never to the api', () => {
      const rendered = render([valuesFile({ ...minimal(), audit: { retentionMonths: 24 } })]);
      const env = (role: string) =>
        containerEnv(container(find(rendered, 'Deployment', `custos-${role}`)), objects(rendered));
      expect(loadConfig(env('worker'))).toMatchObject({
        auditRetentionMonths: 24,
        migrationDatabaseUrl: OWNER_URL,
      });
      expect(loadConfig(env('api'))).toMatchObject({
        auditRetentionMonths: undefined,
        migrationDatabaseUrl: undefined,
      });
      expect(JSON.stringify(find(rendered, 'Deployment', 'custos-api'))).not.toContain(
        'CUSTOS_MIGRATION_DATABASE_URL',
      );
    });
  });

  describe('names', () => {
    it('stay valid with the longest release name helm allows', () => {
      const name = `${'long-release-name-'.repeat(3).slice(0, 52)}x`;
      expect(name).toHaveLength(53);
      const values = {
        ...minimal(),
        grafanaDashboard: { enabled: true },
        api: { ingress: { enabled: true } },
      };
      // validateObject holds every name to the API server's rules (Services: 63 characters).
      const rendered = render([valuesFile(values)], chartDir, ['-name', name]);
      const names = rendered.map((r) => r.object.metadata.name);
      expect(names).toContain(`${`${name}-custos`.slice(0, 59)}-api`);
      expect(names).toContain(`${`${name}-custos`.slice(0, 52)}-migrations`);
    });
  });

  describe('audit forwarding', () => {
    it('configures the worker alone, with the signing secret', () => {
      const rendered = render([
        valuesFile({
          ...minimal(),
          audit: { forward: 'https://siem.example.com/custos', forwardSecret: 's'.repeat(32) },
        }),
      ]);
      const env = (role: string) =>
        containerEnv(container(find(rendered, 'Deployment', `custos-${role}`)), objects(rendered));
      expect(loadConfig(env('worker')).auditForward).toEqual({
        to: 'webhook',
        url: 'https://siem.example.com/custos',
        secret: 's'.repeat(32),
      });
      expect(env('api')).not.toHaveProperty('CUSTOS_AUDIT_FORWARD_SECRET');
    });
  });

  describe('values.schema.json', () => {
    const errorsFor = (values: Values) => {
      schemaCheck(mergedValues([valuesFile(minimal()), valuesFile(values)]));
      return (schemaCheck.errors ?? []).map((e) => {
        const extra = e.keyword === 'additionalProperties' ? `: ${String(e.params.additionalProperty)}` : '';
        return `${e.instancePath || '(root)'} ${e.message ?? ''}${extra}`;
      });
    };

    it('rejects a replica count that is not a number', () => {
      expect(errorsFor({ api: { replicas: 'three' } })).toEqual(['/api/replicas must be integer']);
    });

    it('rejects a misspelt value instead of ignoring it', () => {
      expect(errorsFor({ api: { replica: 3 } })).toEqual([
        '/api must NOT have additional properties: replica',
      ]);
      expect(errorsFor({ databse: { url: APP_URL } })).toEqual([
        '(root) must NOT have additional properties: databse',
      ]);
    });

    it('refuses secrets and chart-managed variables in config, and numbers there (helm would print 3.6e+06)', () => {
      expect(errorsFor({ config: { DATABASE_URL: APP_URL } })).toContain(
        '/config property name must be valid',
      );
      expect(errorsFor({ config: { CUSTOS_DB_STATEMENT_TIMEOUT_MS: 3600000 } })).toEqual([
        '/config/CUSTOS_DB_STATEMENT_TIMEOUT_MS must be string',
      ]);
      expect(errorsFor({ config: { CUSTOS_DB_STATEMENT_TIMEOUT_MS: '3600000' } })).toEqual([]);
    });
  });

  describe('values the chart refuses to render', () => {
    it('names the missing database when neither database.url nor existingSecret is set', () => {
      const stderr = renderError([valuesFile({ rootKeys: ROOT_KEYS })]);
      expect(stderr).toMatch(
        /^Error: execution error at \(custos\/templates\/[a-z-]+\.yaml:\d+:\d+\): database\.url is required/,
      );
      expect(stderr).toContain('existingSecret');
      expect(stderr).toContain('The embedded PostgreSQL is not for Kubernetes');
    });

    it('names the missing root keyring', () => {
      const stderr = renderError([valuesFile({ database: { url: APP_URL } })]);
      expect(stderr).toContain('rootKeys is required');
    });

    it('fails with the default values alone', () => {
      expect(renderError([])).toContain('database.url is required');
    });

    it('says which value is wrong without quoting a secret', () => {
      const bad = renderError([
        valuesFile({ database: { url: 'mysql://root:hunter2@db/custos' }, rootKeys: ROOT_KEYS }),
      ]);
      expect(bad).toContain('database.url must be a postgres:// or postgresql:// URL');
      expect(bad).not.toContain('hunter2');
      const keys = renderError([valuesFile({ ...minimal(), rootKeys: 'v1:c2VjcmV0LWJ1dC1zaG9ydA==' })]);
      expect(keys).toContain('rootKeys must look like');
      expect(keys).not.toContain('c2VjcmV0');
    });

    it('refuses a secret value next to existingSecret, where it would be ignored', () => {
      const stderr = renderError([
        valuesFile({ existingSecret: 'mine', redis: { url: 'redis://:pw@r:6379' } }),
      ]);
      expect(stderr).toContain('redis.url is set, but existingSecret "mine" is used');
      expect(stderr).not.toContain(':pw@');
    });

    it('refuses a forwarding URL without its signing secret', () => {
      const stderr = renderError([
        valuesFile({ ...minimal(), audit: { forward: 'https://siem.example.com/' } }),
      ]);
      expect(stderr).toContain('audit.forwardSecret');
    });

    it('refuses a chart-managed variable in config', () => {
      expect(renderError([valuesFile({ ...minimal(), config: { CUSTOS_ROLE: 'all' } })])).toContain(
        'config.CUSTOS_ROLE: the chart sets CUSTOS_ROLE itself',
      );
    });
  });

  describe('the Grafana dashboard ConfigMap', () => {
    it('is off by default', () => {
      const rendered = render([valuesFile(minimal())]);
      expect(rendered.filter((r) => r.object.metadata.name.endsWith('-dashboards'))).toEqual([]);
    });

    it('holds every dashboards/*.json of the chart when enabled', () => {
      // A copy of the chart with one more dashboard, so the test does not depend on which dashboards exist.
      const copy = path.join(tmp, 'chart');
      fs.cpSync(chartDir, copy, { recursive: true });
      fs.mkdirSync(path.join(copy, 'dashboards'), { recursive: true });
      fs.writeFileSync(
        path.join(copy, 'dashboards/zz-test.json'),
        JSON.stringify({ title: 'test', panels: [] }, null, 2),
      );
      const expected = fs.readdirSync(path.join(copy, 'dashboards')).filter((f) => f.endsWith('.json'));
      const rendered = render([valuesFile({ ...minimal(), grafanaDashboard: { enabled: true } })], copy);
      const cm = find(rendered, 'ConfigMap', 'custos-dashboards');
      expect(cm.metadata.labels).toMatchObject({ grafana_dashboard: '1' });
      const data = cm.data as Record<string, string>;
      expect(Object.keys(data).sort()).toEqual(expected.sort());
      for (const f of expected) {
        expect(data[f]).toBe(fs.readFileSync(path.join(copy, 'dashboards', f), 'utf8'));
        expect(() => JSON.parse(data[f]) as unknown).not.toThrow();
      }
      // A ConfigMap holds at most 1 MiB.
      expect(Buffer.byteLength(JSON.stringify(data))).toBeLessThan(1024 * 1024);
    });
  });

  describe('the renderer (test/helm/fixtures/probe)', () => {
    const probe = path.join(repoRoot, 'test/helm/fixtures/probe');
    const run = (extra: string[]) => runRenderer(binary, ['-chart', probe, '-name', 'rel', ...extra]);

    it('renders values, helpers, functions and files as helm does', () => {
      const r = run(['-f', path.join(probe, 'override.yaml')]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const docs = splitStream(r.stdout);
      // Install order: ServiceAccounts before ConfigMaps; a document that is only a comment goes last, as helm
      // keeps it (with no kind); an empty template and an empty document give nothing.
      expect(docs.map((d) => d.source)).toEqual([
        'probe/templates/docs.yaml',
        'probe/templates/docs.yaml',
        'probe/templates/values.yaml',
        'probe/templates/docs.yaml',
      ]);
      expect(docs[3].text.trim()).toBe('# A comment alone: helm keeps it as a document of its own.');
      const cm = parseYaml(docs[2].text, { version: '1.1' }) as KubeObject & {
        data: Record<string, string | null>;
      };
      expect(cm.metadata).toEqual({ name: 'rel-probe', labels: { app: 'probe', release: 'rel' } });
      expect(cm.data).toEqual({
        // Values are read through JSON, so every number is a float64: printed as Go prints one.
        big: '3.6e+06',
        bigInt: '3600000',
        small: '3',
        ratio: '0.5',
        // An override replaces a list, merges a table, and deletes a default with null.
        list: '["c"]',
        nested: '{"deep":{"x":1,"z":2},"keep":1}',
        // toYaml is sigs.k8s.io/yaml's: keys sorted, no trailing newline.
        yaml: 'deep:\n  x: 1\n  z: 2\nkeep: 1',
        tpl: 'rel-tpl',
        lookup: '{}',
        hasApps: 'true',
        hasCRD: 'false',
        template: 'probe/templates/values.yaml',
        // A missing value is nil; quote drops it.
        missing: null,
        file: 'one\ntwo\n',
        lines: '["one","two"]',
        glob: 'a.txt: |\n  one\n  two\nb.txt: |\n  b',
        chart: 'probe-1.2.3-4.5',
        release: 'default/rel/true/1/Helm',
        kube: 'v1.31.0 1.31',
        fromYaml: '[1,2]',
        badYaml: 'true',
      });
    });

    it('renders NOTES.txt apart from the manifests', () => {
      expect(run(['-notes']).stdout).toBe('notes for rel\n');
      expect(run([]).stdout).not.toContain('notes for');
    });

    it('fails on required, naming the template and the position', () => {
      const r = run(['-f', valuesFile({ fail: true })]);
      expect(r.status).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe(
        'Error: execution error at (probe/templates/required.yaml:2:4): x is required: set it\n',
      );
    });

    it('fails on a template that does not parse, and on output that is not YAML', () => {
      const copy = path.join(tmp, 'probe-broken');
      fs.cpSync(probe, copy, { recursive: true });
      fs.writeFileSync(path.join(copy, 'templates/broken.yaml'), '{{ if }}\n');
      const parse = runRenderer(binary, ['-chart', copy]);
      expect(parse.status).toBe(1);
      expect(parse.stderr).toMatch(/^Error: parse error at \(probe\/templates\/broken\.yaml:1\)/);
      fs.writeFileSync(path.join(copy, 'templates/broken.yaml'), 'a: b: c\n');
      const yaml = runRenderer(binary, ['-chart', copy]);
      expect(yaml.status).toBe(1);
      expect(yaml.stderr).toContain('YAML parse error on probe/templates/broken.yaml');
    });

    it('has no env or expandenv, as in helm', () => {
      const copy = path.join(tmp, 'probe-env');
      fs.cpSync(probe, copy, { recursive: true });
      fs.writeFileSync(path.join(copy, 'templates/env.yaml'), 'home: {{ env "HOME" }}\n');
      const r = runRenderer(binary, ['-chart', copy]);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain('function "env" not defined');
    });
  });

  describe('the unknown-field check', () => {
    it('refuses a kind the chart is not expected to render', () => {
      expect(() =>
        validateObject({
          apiVersion: 'monitoring.coreos.com/v1',
          kind: 'ServiceMonitor',
          metadata: { name: 'x' },
        }),
      ).toThrow('unexpected kind monitoring.coreos.com/v1/ServiceMonitor');
    });

    it('reports what the schema validators refuse', () => {
      const rendered = render([valuesFile(minimal())]);
      const d = structuredClone(find(rendered, 'Deployment', 'custos-api'));
      (d.spec as Record<string, unknown>).replicas = 'one';
      expect(() => validateObject(d)).toThrow('data/spec/replicas must be integer');
    });

    it('finds a misspelt field that the schema validators alone accept', () => {
      const rendered = render([valuesFile(minimal())]);
      const d = structuredClone(find(rendered, 'Deployment', 'custos-api'));
      const c = container(d) as IContainer & Record<string, unknown>;
      c.readinesProbe = c.readinessProbe;
      (c.securityContext as Record<string, unknown>).readOnlyRootFileSystem = true;
      expect(validateObject(d)).toEqual([
        'Deployment/custos-api.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem',
        'Deployment/custos-api.spec.template.spec.containers[0].readinesProbe',
      ]);
    });
  });
});
