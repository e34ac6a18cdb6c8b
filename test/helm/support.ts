/**
 * What the chart test needs: the stand-in for `helm template` (test/helm/render, built from Debian's Go
 * packages and cached under the system temp folder by a hash of its source), the rendered objects checked
 * against Kubernetes' schemas with unknown fields refused, and the environment a container would be given.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ConfigMap, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import type { IContainer } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Ingress, NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';

export const repoRoot = path.resolve(__dirname, '../..');
export const chartDir = path.join(repoRoot, 'helm/custos');
const renderSource = path.join(__dirname, 'render');

/** Debian's Go and the packages the renderer imports; .ci/run installs them. */
export const GO_PACKAGES = [
  'golang-go',
  'golang-github-masterminds-sprig-dev',
  'golang-github-ghodss-yaml-dev',
  'golang-gopkg-yaml.v2-dev',
  'golang-gopkg-yaml.v3-dev',
];
const INSTALL_HINT =
  `run the Go install step of .ci/run (apt-get install -y ${GO_PACKAGES.join(' ')}), ` +
  'or set CUSTOS_SKIP_HELM=1 to skip the chart tests on purpose';
/** Where Debian puts Go libraries' sources (GOPATH mode: nothing is downloaded). */
const DEBIAN_GOPATH = '/usr/share/gocode';

/** The renderer's binary, built once per version of its source. */
export function buildRenderer(): string {
  const sources = fs
    .readdirSync(renderSource)
    .filter((f) => f.endsWith('.go'))
    .sort();
  const hash = crypto.createHash('sha256');
  for (const f of sources)
    hash
      .update(f)
      .update('\0')
      .update(fs.readFileSync(path.join(renderSource, f)));
  const dir = path.join(os.tmpdir(), `custos-helm-render-${hash.digest('hex').slice(0, 16)}`);
  const binary = path.join(dir, 'render');
  if (fs.existsSync(binary)) return binary;

  const go = spawnSync('go', ['version'], { encoding: 'utf8' });
  if (go.error || go.status !== 0) {
    throw new Error(`Go is not installed (${go.error?.message ?? go.stderr.trim()}): ${INSTALL_HINT}`);
  }
  fs.mkdirSync(dir, { recursive: true });
  // GOPATH mode, with the package inside a GOPATH of its own: its go.mod (no requirements) is what lets
  // imports like github.com/Masterminds/sprig/v3 resolve to Debian's github.com/Masterminds/sprig.
  const gopath = fs.mkdtempSync(path.join(dir, 'gopath-'));
  const pkg = path.join(gopath, 'src', 'custos-helm-render');
  fs.mkdirSync(pkg, { recursive: true });
  for (const f of sources) fs.copyFileSync(path.join(renderSource, f), path.join(pkg, f));
  fs.writeFileSync(path.join(pkg, 'go.mod'), 'module custos-helm-render\n');
  const tmpBinary = `${binary}.${process.pid}`;
  const build = spawnSync('go', ['build', '-o', tmpBinary, '.'], {
    cwd: pkg,
    encoding: 'utf8',
    env: {
      ...process.env,
      GO111MODULE: 'off',
      GOPATH: `${gopath}:${DEBIAN_GOPATH}`,
      GOFLAGS: '',
      CGO_ENABLED: '0',
      GOCACHE: process.env.GOCACHE ?? path.join(os.tmpdir(), 'custos-helm-gocache'),
    },
  });
  fs.rmSync(gopath, { recursive: true, force: true });
  if (build.status !== 0) {
    const missing = /cannot find package/.test(build.stderr)
      ? `a Go package is missing: ${INSTALL_HINT}\n`
      : '';
    throw new Error(`building the Helm renderer failed: ${missing}${build.stderr}`);
  }
  fs.renameSync(tmpBinary, binary);
  return binary;
}

export interface RenderResult {
  status: number;
  stdout: string;
  stderr: string;
}

export function runRenderer(binary: string, args: string[]): RenderResult {
  const r = spawnSync(binary, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A rendered object, with the template it came from. */
export interface Rendered {
  source: string;
  object: KubeObject;
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
}

/** The documents of the stream the renderer prints, as text, with the template each came from. */
export function splitStream(stream: string): { source: string; text: string }[] {
  const parts = stream.split(/^---\n# Source: (.+)\n/m);
  if (parts[0].trim() !== '') throw new Error(`output before the first document: ${parts[0]}`);
  const out: { source: string; text: string }[] = [];
  for (let i = 1; i < parts.length; i += 2) out.push({ source: parts[i], text: parts[i + 1] });
  return out;
}

/**
 * The stream `helm template` prints (`---`, `# Source: <template>`, one document), split as the renderer
 * wrote it and each document parsed as YAML 1.1, as Kubernetes parses it (sigs.k8s.io/yaml over go-yaml
 * v2): `yes`, `on` and 0755 mean what they mean there.
 */
export function parseStream(stream: string): Rendered[] {
  const out: Rendered[] = [];
  for (const { source, text } of splitStream(stream)) {
    const docs = parseAllDocuments(text, { version: '1.1' });
    if (!Array.isArray(docs) || docs.length !== 1) throw new Error(`${source}: expected one YAML document`);
    const [doc] = docs;
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const object = doc.toJS() as KubeObject | null;
    if (object === null || typeof object !== 'object') throw new Error(`${source}: not an object`);
    out.push({ source, object });
  }
  return out;
}

interface Validating {
  prototype: { validate(this: unknown): void };
}
type ModelClass = Validating & (new (data: never) => { validate(): void });

/** Every kind the chart may render; anything else fails the test. */
const models: Record<string, ModelClass> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/ServiceAccount': ServiceAccount,
  'apps/v1/Deployment': Deployment,
  'batch/v1/Job': Job,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/Ingress': Ingress,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
};

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;
const QUALIFIED_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
/** Kinds whose names the API server holds to a DNS label (63 characters), not a subdomain. */
const LABEL_NAMED = new Set(['Service']);

/** The API server's checks on names, labels and annotation keys, which the OpenAPI schemas do not carry. */
function checkMeta(object: KubeObject): void {
  const { name, labels = {}, annotations = {} } = object.metadata;
  const id = `${object.kind}/${name}`;
  if (!(LABEL_NAMED.has(object.kind) ? DNS_LABEL : DNS_SUBDOMAIN).test(name))
    throw new Error(`${id}: invalid name`);
  for (const [k, v] of Object.entries(labels)) {
    if (!QUALIFIED_NAME.test(k) || !LABEL_VALUE.test(v)) throw new Error(`${id}: invalid label ${k}: ${v}`);
  }
  for (const k of Object.keys(annotations)) {
    if (!QUALIFIED_NAME.test(k)) throw new Error(`${id}: invalid annotation ${k}`);
  }
}

/**
 * Checks an object against its kind's OpenAPI schema (kubernetes-models) and the API server's rules for
 * names and labels, then for fields the schema does not know: kubernetes-models' validators accept them,
 * the API server (and helm's client-side validation) refuse them. The validator reads every property its
 * schema declares, so a property it never read through a recording proxy is unknown. Returns the unknown
 * fields' paths.
 */
export function validateObject(object: KubeObject): string[] {
  const Model = models[`${object.apiVersion}/${object.kind}`];
  if (!Model) {
    throw new Error(`unexpected kind ${object.apiVersion}/${object.kind} (${object.metadata?.name})`);
  }
  new Model(object as never).validate();
  checkMeta(object);

  const read = new WeakMap<object, Set<PropertyKey>>();
  const record = (target: unknown): unknown => {
    if (target === null || typeof target !== 'object') return target;
    return new Proxy(target, {
      get(t, key, receiver) {
        let keys = read.get(t);
        if (!keys) read.set(t, (keys = new Set()));
        keys.add(key);
        return record(Reflect.get(t, key, receiver));
      },
    });
  };
  Model.prototype.validate.call(record(object));

  const unknown: string[] = [];
  const walk = (node: unknown, at: string) => {
    if (node === null || typeof node !== 'object') return;
    if (Array.isArray(node)) {
      node.forEach((item, i) => walk(item, `${at}[${i}]`));
      return;
    }
    const keys = read.get(node);
    // Never read at all: free-form content under a known field (or under an unknown one, already named).
    if (!keys) return;
    for (const [key, value] of Object.entries(node)) {
      if (!keys.has(key)) unknown.push(`${at}.${key}`);
      else walk(value, `${at}.${key}`);
    }
  };
  walk(object, `${object.kind}/${object.metadata.name}`);
  return unknown;
}

/**
 * The environment a container starts with: its ConfigMap and Secret references resolved against the
 * rendered objects, or against `external` (Secrets the chart only names).
 */
export function containerEnv(
  container: IContainer,
  objects: KubeObject[],
  external: Record<string, Record<string, string>> = {},
): Record<string, string> {
  const configMap = (name: string) =>
    objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === name)?.data as
      Record<string, string> | undefined;
  const secret = (name: string): Record<string, string> | undefined => {
    const s = objects.find((o) => o.kind === 'Secret' && o.metadata.name === name);
    if (!s) return external[name];
    const data = (s.data ?? {}) as Record<string, string>;
    return Object.fromEntries(
      Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]),
    );
  };
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    if (from.configMapRef) {
      const data = configMap(from.configMapRef.name ?? '');
      if (!data) throw new Error(`ConfigMap ${from.configMapRef.name} is not rendered`);
      Object.assign(env, data);
    }
    if (from.secretRef) throw new Error(`envFrom a Secret (${from.secretRef.name}) passes every key in it`);
  }
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    const ref = e.valueFrom?.secretKeyRef;
    if (ref) {
      const value = secret(ref.name ?? '')?.[ref.key];
      if (value !== undefined) env[e.name] = value;
      else if (!ref.optional) throw new Error(`${e.name}: Secret ${ref.name} has no key ${ref.key}`);
    }
    if (e.valueFrom && !ref) throw new Error(`${e.name}: unexpected valueFrom`);
  }
  return env;
}
