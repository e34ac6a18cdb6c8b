/**
 * The backtracking check of connection-config patterns: the catalog's own patterns are judged by steps alone,
 * so that a busy machine cannot make Custos refuse its shipped providers at start-up; a tenant's patterns also
 * get a time budget, so that a tenant cannot spend Custos's CPU. A busy machine is simulated by a clock that
 * jumps a second every time it is read.
 */
import {
  parseCustomProviderDefinition,
  parseProviderDefinition,
} from '../../../src/providers/provider-definition.js';

/** The pattern of the shipped databricks, servicenow and zendesk definitions. */
const HOST_LABEL = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';

const definition = {
  key: 'acme',
  name: 'Acme',
  authMode: 'oauth2',
  oauth2: {
    authorizationUrl: 'https://{tenant}.acme.example/authorize',
    tokenUrl: 'https://{tenant}.acme.example/token',
    scopes: ['read'],
  },
  connectionConfig: [{ key: 'tenant', label: 'Tenant', pattern: HOST_LABEL }],
};

let now = 0;
beforeEach(() => {
  now = Date.now();
  jest.spyOn(Date, 'now').mockImplementation(() => (now += 1000));
});
afterEach(() => jest.restoreAllMocks());

it('accepts a catalog pattern however slow the machine', () => {
  expect(parseProviderDefinition(definition).connectionConfig?.[0]?.pattern).toBe(HOST_LABEL);
});

it('refuses a tenant pattern whose check overruns its time budget', () => {
  expect(() => parseCustomProviderDefinition(definition)).toThrow(/backtrack catastrophically/);
});

it('accepts the same tenant pattern on a machine keeping time', () => {
  jest.restoreAllMocks();
  expect(parseCustomProviderDefinition(definition).connectionConfig?.[0]?.pattern).toBe(HOST_LABEL);
});
