/**
 * The OpenAPI document (served at /openapi.json, browsed at /docs): its frame — version, security schemes, tags —
 * and the helpers every controller's decorators use, so that each operation documents its request, its answers
 * and their examples the same way. Schemas come from the zod schemas the API validates with (z.toJSONSchema),
 * in the JSON Schema dialect OpenAPI 3.1 uses (2020-12).
 */
import { applyDecorators } from '@nestjs/common';
import {
  ApiBody,
  ApiParam,
  ApiResponse,
  DocumentBuilder,
  type HeadersObject,
  type OpenAPIObject,
  type SchemaObject,
} from '@nestjs/swagger';
import { z } from 'zod';

/** A schema as the document holds it (JSON Schema 2020-12, OpenAPI 3.1). */
export type JsonSchema = SchemaObject;

/** A named example of a request or response body. */
export interface NamedExample {
  summary: string;
  value: unknown;
}

/** The security scheme of admin keys (`Authorization: Bearer cus_…`). */
export const ADMIN_KEY_SCHEME = 'bearer';
/** The security scheme of connectors' client id and secret (`Authorization: Basic …`). */
export const CONNECTOR_BASIC_SCHEME = 'basic';

/**
 * JSON Schema of a zod schema: what a request may send (`input`, the default) or what a response holds
 * (`output`). Parts JSON Schema cannot say (a transform, a refinement) are left open rather than refused.
 */
export function zodSchema(schema: z.ZodType, io: 'input' | 'output' = 'input'): JsonSchema {
  const converted = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  // The document says which dialect its schemas speak; a `$schema` in every one only adds noise.
  delete converted.$schema;
  return converted;
}

/** Examples that share one id, so that one example's answer can be followed by the next call. */
export const EXAMPLE = {
  tenantId: '3f2a8c1e-5b7d-4e9a-8c2f-1d6b4a9e7c30',
  keyId: '9b1d7c2e-4f6a-4c8b-a1e3-5d7f9b2c4e60',
  connectorId: '6e4b2a1c-8d3f-4a7e-9c5b-2f1e8d7a6b40',
  connectionId: '1c9e7a5b-3d2f-4b8e-a6c4-8f0d2b4e6a10',
  sessionId: '7d5c3b1a-9e8f-4d6c-b2a4-6e8f0a2c4d70',
  eventId: '2a4c6e8f-0b1d-4f3a-8c5e-7b9d1f3a5c80',
  requestId: '0f8e2c6a-4b1d-4e7f-9a3c-5d2b8e1f6a90',
  userId: 'alice@example.com',
  provider: 'github',
  clientId: 'cus_ci_Q2xpZW50SWRFeGFtcGxlMQ',
  time: '2026-12-03T10:15:30.000Z',
  later: '2026-12-03T10:30:30.000Z',
} as const;

/** The stable error body of the admin API. */
export const ERROR_BODY: JsonSchema = {
  type: 'object',
  required: ['error', 'message', 'requestId'],
  properties: {
    error: {
      type: 'string',
      pattern: '^[a-z][a-z_]*$',
      description: 'A stable code (docs/api.md, "Errors"); decide on this, not on the message.',
    },
    message: {
      type: 'string',
      description: 'What went wrong, for a person. 5xx other than 503: `Internal error`.',
    },
    requestId: {
      type: 'string',
      description: 'The request id, also in the X-Request-Id header: quote it when reporting a problem.',
    },
    details: {
      type: 'object',
      description:
        'Some 4xx answers only: `issues` (each with the `path` of the field and a `message`) for validation, `reason` for a finer cause.',
    },
  },
};

/** A sample message per code, for examples. */
const SAMPLE_MESSAGES: Record<string, string> = {
  invalid_request: 'A JSON object body is required',
  validation_failed: 'Invalid request body at name: Too small: expected string to have >=1 characters',
  unknown_field: 'Unknown field(s): colour',
  malformed_id: 'Malformed id in path',
  json_too_deep: 'The request body is nested more than 32 levels deep',
  payload_too_large: 'Request body is too large',
  unsupported_media_type: 'Unsupported Content-Type',
  unauthenticated: 'A valid admin API key is required (Authorization: Bearer <key>)',
  forbidden: "This key's role (auditor) may not do this",
  not_found: 'Not found',
  conflict: 'Conflicts with the current state',
  rate_limited: 'Too many failed authentications; retry later',
  outbound_url_refused: 'Outbound URL https://10.0.0.5 points at a non-public address',
  outbound_url_unresolvable: 'Could not resolve https://idp.example.invalid: no such host',
  outbound_request_failed: 'Outbound request to https://idp.example.com failed',
  temporarily_unavailable: 'A backing service is unavailable; retry later',
  key_unavailable: "The tenant's key backend is unavailable; retry later",
  unknown_provider: 'Unknown provider: acme',
  credential_type_mismatch: 'github takes an oauth2 credential, not api_key',
  return_url_not_allowed: 'returnTo is not on the tenant’s allowed return URLs',
  provider_not_configured:
    'GitHub is not set up for this tenant: register its OAuth app first (PUT /v1/tenants/{tenantId}/providers/github/app)',
  key_backend_unreachable:
    'Cannot reach the KMS endpoint https://kms.eu-west-1.amazonaws.com: no answer within the deadline (CUSTOS_KEY_BACKEND_TIMEOUT_MS). Nothing was saved.',
  key_backend_denied:
    'AWS KMS at https://kms.eu-west-1.amazonaws.com denied access to the key alias/custos (AccessDenied): the key policy or IAM policy must allow kms:GenerateDataKey, kms:Encrypt, kms:Decrypt and kms:ReEncrypt* for the credentials Custos uses. Nothing was saved.',
  key_backend_not_found:
    'AWS KMS at https://kms.eu-west-1.amazonaws.com has no key alias/custos in region eu-west-1: check `keyId` and `region`. Nothing was saved.',
  key_backend_invalid:
    'The key backend rejected this configuration (misconfigured): https://vault.example.com answered with a redirect (HTTP 307), which is not followed. Nothing was saved.',
};

const STATUS_DESCRIPTIONS: Record<number, string> = {
  400: 'The request is malformed or its values are not valid; nothing was changed.',
  401: 'No credentials, or credentials Custos does not know (an unknown or revoked key).',
  403: 'The credentials are valid but their role may not do this.',
  404: 'No such resource for this tenant (another tenant’s resources are not found either).',
  409: 'The request conflicts with the current state.',
  413: 'The body is larger than the limit.',
  415: 'The body is not of a type this operation takes.',
  429: 'Too many failed authentications from this address or with this credential: retry after `Retry-After` seconds.',
  502: 'An outbound call Custos had to make failed.',
  503: 'A backing service (database, Redis, a key backend) is unavailable: retry after `Retry-After` seconds. Never a reason to think the credentials are bad.',
};

const RETRY_AFTER: HeadersObject = {
  'Retry-After': { description: 'Seconds to wait before retrying.', schema: { type: 'integer', minimum: 1 } },
};

/** An example of the error body with `code`. */
export function errorExample(code: string, message = SAMPLE_MESSAGES[code] ?? code): Record<string, unknown> {
  return { error: code, message, requestId: EXAMPLE.requestId };
}

/**
 * Error answers of the admin API, by status: each with the stable body and an example per code it can carry.
 * `descriptions` overrides what a status means for this operation.
 */
export function ApiErrors(
  codes: Partial<Record<number, string[]>>,
  descriptions: Partial<Record<number, string>> = {},
): MethodDecorator & ClassDecorator {
  return applyDecorators(
    ...Object.entries(codes).map(([status, list]) =>
      ApiResponse({
        status: Number(status),
        description: descriptions[Number(status)] ?? STATUS_DESCRIPTIONS[Number(status)] ?? 'An error.',
        ...(Number(status) === 429 || Number(status) === 503 ? { headers: RETRY_AFTER } : {}),
        content: {
          'application/json': {
            schema: ERROR_BODY,
            examples: Object.fromEntries(
              (list ?? []).map((code) => [code, { summary: code, value: errorExample(code) }]),
            ),
          },
        },
      }),
    ),
  );
}

/** What any admin-key operation can answer besides its own errors (on the controller class). */
export const ApiAdminErrors = (): MethodDecorator & ClassDecorator =>
  ApiErrors({
    401: ['unauthenticated'],
    403: ['forbidden'],
    429: ['rate_limited'],
    503: ['temporarily_unavailable'],
  });

/** A JSON answer with its schema and example(s). */
export function ApiJsonResponse(
  status: number,
  description: string,
  schema: JsonSchema,
  example: unknown,
  more: { examples?: Record<string, NamedExample>; headers?: HeadersObject } = {},
): MethodDecorator & ClassDecorator {
  return ApiResponse({
    status,
    description,
    ...(more.headers ? { headers: more.headers } : {}),
    content: {
      'application/json': {
        schema,
        ...(more.examples ? { examples: more.examples } : { example }),
      },
    },
  });
}

/** 204: done, no body. */
export const ApiNoContent = (description: string): MethodDecorator & ClassDecorator =>
  ApiResponse({ status: 204, description });

/** A JSON request body with its schema and examples (the first is what "Try it out" starts from). */
export function ApiJsonBody(
  schema: JsonSchema,
  examples: Record<string, NamedExample>,
  description?: string,
): MethodDecorator {
  return ApiBody({ schema, examples, required: true, ...(description ? { description } : {}) });
}

/**
 * A parameter's example, as `examples` (Nest drops a parameter's `example` when it has a schema): what "Try it
 * out" fills in.
 */
export const paramExample = (value: unknown): { examples: Record<string, { value: unknown }> } => ({
  examples: { example: { value } },
});

/** The `tenantId` path parameter (on a controller, for all its operations). */
export const ApiTenantParam = (): MethodDecorator & ClassDecorator =>
  ApiParam({
    name: 'tenantId',
    description: 'The tenant’s id (a UUID). A tenant key reaches only its own tenant: any other is 404.',
    schema: { type: 'string', format: 'uuid' },
    ...paramExample(EXAMPLE.tenantId),
  });

/** A UUID path parameter. */
export const ApiUuidParam = (name: string, description: string, example: string): MethodDecorator =>
  ApiParam({ name, description, schema: { type: 'string', format: 'uuid' }, ...paramExample(example) });

/** A provider key path parameter. */
export const ApiProviderParam = (name = 'provider'): MethodDecorator & ClassDecorator =>
  ApiParam({
    name,
    description:
      'A provider key: one of the catalog (`GET /v1/providers`) or a custom provider of the tenant.',
    schema: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' },
    ...paramExample(EXAMPLE.provider),
  });

/** The frame of the document: everything but the paths, which Nest collects from the controllers. */
export function openApiFrame(version: string): Omit<OpenAPIObject, 'paths'> {
  return new DocumentBuilder()
    .setOpenAPIVersion('3.1.0')
    .setTitle('Custos')
    .setVersion(version)
    .setDescription(
      [
        'Credential vault and connector control plane: each user’s own OAuth tokens and API keys for third-party ' +
          'systems, under envelope encryption, handed to registered connectors (such as MCP servers) for that user.',
        '',
        '**Authentication.** The admin API (`/v1/…`) takes an **admin key** as a bearer token (`Authorization: ' +
          'Bearer cus_…`): the platform admin key (`.custos/bootstrap-admin-key` on a first start, or ' +
          '`CUSTOS_BOOTSTRAP_ADMIN_KEY`) manages tenants; tenant keys (`POST /v1/tenants/{tenantId}/admin-keys`) ' +
          'manage one tenant (`admin`) or read its audit trail (`auditor`). Connectors authenticate to ' +
          '`POST /oauth/token` (and to connect sessions) with their client id and secret (HTTP Basic) or a ' +
          '`private_key_jwt` client assertion. Use **Authorize** above to try the operations here.',
        '',
        '**Errors.** The admin API answers errors as `{"error": "<stable code>", "message", "requestId"}` (some ' +
          '4xx add `details`); the token endpoint answers RFC 6749 errors, `{"error", "error_description"}`. ' +
          'Outages are 503 with `Retry-After`, never 401 or 403.',
      ].join('\n'),
    )
    .addBearerAuth(
      {
        type: 'http',
        scheme: 'bearer',
        bearerFormat: 'Custos admin key (cus_…)',
        description:
          'An admin key, not a JWT: an opaque secret starting with `cus_`, shown once when issued and stored ' +
          'hashed. Platform admin keys manage tenants; tenant `admin` keys manage their tenant; tenant `auditor` ' +
          'keys only read its audit trail. Paste the key itself (without "Bearer").',
      },
      ADMIN_KEY_SCHEME,
    )
    .addBasicAuth(
      {
        type: 'http',
        scheme: 'basic',
        description:
          "A connector's client credentials (client_secret_basic, RFC 6749 §2.3.1): username = its `clientId` " +
          '(`cus_ci_…`), password = its `clientSecret` (`cus_cs_…`, shown once when the connector is created or ' +
          'its secret rotated). Connectors using private_key_jwt send a `client_assertion` instead.',
      },
      CONNECTOR_BASIC_SCHEME,
    )
    .addTag('tenants', 'Tenants and their admin keys (platform and tenant admins).')
    .addTag('providers', 'The provider catalog, a tenant’s custom providers and its OAuth apps at providers.')
    .addTag('connectors', 'Connectors: the workloads (such as MCP servers) that get users’ tokens.')
    .addTag('identity-providers', 'Identity providers whose user tokens a tenant trusts.')
    .addTag('connections', 'Users’ stored credentials: import, list (never a secret), revoke.')
    .addTag('connect', 'Connect sessions: links that let a user connect an account.')
    .addTag(
      'broker',
      'The token endpoint: a connector exchanges a user’s token for that user’s provider token.',
    )
    .addTag('key backend', 'Bring your own key: the tenant’s key backend, rotation, cache flush, migration.')
    .addTag('audit', 'The audit trail: events, the sealed export and its signing keys.')
    .addTag('health', 'Liveness and readiness probes.')
    .build();
}
