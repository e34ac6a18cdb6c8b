/** `POST /oauth/token`: RFC 8693 token exchange for connectors. Answers in RFC 6749 shape, never cached. */
import { Controller, HttpCode, Inject, Post, Req, Res } from '@nestjs/common';
import { ApiBody, ApiConsumes, ApiOperation, ApiResponse, ApiSecurity, ApiTags } from '@nestjs/swagger';
import { CONNECTOR_BASIC_SCHEME } from '../common/openapi.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { BrokerService } from './broker.service.js';
import { tokenResponse } from './token-response.js';
import {
  consentRequiredExample,
  privateKeyJwtFormExample,
  tokenErrorSchema,
  tokenFormExample,
  tokenFormSchema,
  tokenResponseExample,
  tokenResponseSchema,
  trustedFormExample,
} from './token.openapi.js';

/** An RFC 6749 error answer of the token endpoint, with examples by error. */
const oauthError = (status: number, description: string, examples: Record<string, [string, string]>) =>
  ApiResponse({
    status,
    description,
    ...(status === 429 || status === 503
      ? { headers: { 'Retry-After': { description: 'Seconds to wait.', schema: { type: 'integer' } } } }
      : {}),
    content: {
      'application/json': {
        schema: tokenErrorSchema,
        examples: Object.fromEntries(
          Object.entries(examples).map(([name, [error, errorDescription]]) => [
            name,
            { summary: error, value: { error, error_description: errorDescription } },
          ]),
        ),
      },
    },
  });

@ApiTags('broker')
@Controller('oauth')
export class TokenController {
  constructor(@Inject(BrokerService) private readonly broker: BrokerService) {}

  @Post('token')
  @HttpCode(200)
  @ApiOperation({
    summary: 'Token exchange (RFC 8693): a connector gets the user’s own provider token',
    description:
      'Client authentication: HTTP Basic (client_secret_basic: **Authorize** with the connector’s client id and ' +
      'secret) or client_assertion (private_key_jwt, RFC 7523, in the form). ' +
      'grant_type=urn:ietf:params:oauth:grant-type:token-exchange, subject_token (+ subject_token_type), ' +
      'audience=<provider key>, optional scope. Custos checks the connector’s policy, finds the user’s ' +
      'connection, refreshes it if it is about to expire, writes the audit event and only then answers the ' +
      'token; refresh tokens never leave Custos. No usable connection: 400 consent_required with connect_uri, ' +
      'a link to show the user. Too many failed client authentications for the client id or source address: ' +
      '429 slow_down with Retry-After. Answers are never cached (Cache-Control: no-store).',
  })
  @ApiSecurity({})
  @ApiSecurity(CONNECTOR_BASIC_SCHEME)
  @ApiConsumes('application/x-www-form-urlencoded')
  @ApiBody({
    required: true,
    schema: tokenFormSchema,
    examples: {
      userToken: { summary: 'The user’s token from the tenant’s identity provider', value: tokenFormExample },
      trusted: { summary: 'A user id (connectors with trusted delegation)', value: trustedFormExample },
      privateKeyJwt: {
        summary: 'With a client assertion (private_key_jwt)',
        value: privateKeyJwtFormExample,
      },
    },
  })
  @ApiResponse({
    status: 200,
    description: 'The user’s provider token, released after its audit event was written.',
    content: { 'application/json': { schema: tokenResponseSchema, example: tokenResponseExample } },
  })
  @ApiResponse({
    status: 400,
    description:
      'The user must connect (consent_required, with the link), or an RFC 6749 refusal: a malformed request, a ' +
      'subject token that does not verify (invalid_grant), an unknown provider or one the connector may not use ' +
      '(invalid_target), a scope it may not ask for (invalid_scope).',
    content: {
      'application/json': {
        schema: tokenErrorSchema,
        examples: {
          consent_required: {
            summary: 'consent_required: show the user the link',
            value: consentRequiredExample,
          },
          invalid_request: {
            summary: 'invalid_request',
            value: { error: 'invalid_request', error_description: 'audience (the provider key) is required' },
          },
          invalid_grant: {
            summary: 'invalid_grant',
            value: { error: 'invalid_grant', error_description: 'The subject token has expired' },
          },
          invalid_target: {
            summary: 'invalid_target',
            value: { error: 'invalid_target', error_description: 'Unknown provider' },
          },
          invalid_scope: {
            summary: 'invalid_scope',
            value: {
              error: 'invalid_scope',
              error_description: 'Scope outside what this connector is allowed',
            },
          },
          unsupported_grant_type: {
            summary: 'unsupported_grant_type',
            value: {
              error: 'unsupported_grant_type',
              error_description: 'Only urn:ietf:params:oauth:grant-type:token-exchange is supported',
            },
          },
        },
      },
    },
  })
  @oauthError(
    401,
    'Client authentication failed (unknown client, wrong secret, bad assertion, disabled connector). With HTTP Basic, a WWW-Authenticate challenge.',
    {
      invalid_client: ['invalid_client', 'Client authentication failed'],
    },
  )
  @oauthError(
    429,
    'Too many failed requests for this client id or source address: retry after Retry-After seconds.',
    {
      slow_down: ['slow_down', 'Too many failed requests; retry after 30 seconds'],
    },
  )
  @oauthError(
    503,
    'A backing service, or the tenant’s key backend, is unavailable: retry after Retry-After seconds. Never a sign of bad credentials.',
    {
      temporarily_unavailable: ['temporarily_unavailable', 'A backing service is unavailable; retry later'],
      key_unavailable: ['key_unavailable', 'The tenant’s key backend is unavailable'],
    },
  )
  async token(@Req() req: FastifyRequest, @Res() reply: FastifyReply): Promise<void> {
    const authorization = req.headers.authorization;
    const outcome = await this.broker.token({
      contentType: req.headers['content-type'],
      authorization: typeof authorization === 'string' ? authorization : undefined,
      body: req.body,
      // The socket's address, or the client named by a trusted proxy (CUSTOS_TRUST_PROXY).
      sourceAddress: req.ip,
    });
    const answer = tokenResponse(outcome);
    await reply.status(answer.status).headers(answer.headers).send(answer.body);
  }
}
