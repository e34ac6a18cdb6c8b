/** `POST /oauth/token`: RFC 8693 token exchange for connectors. Answers in RFC 6749 shape, never cached. */
import { Controller, HttpCode, Inject, Post, Req, Res } from '@nestjs/common';
import { ApiConsumes, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { BrokerService } from './broker.service.js';
import { tokenResponse } from './token-response.js';

@ApiTags('broker')
@Controller('oauth')
export class TokenController {
  constructor(@Inject(BrokerService) private readonly broker: BrokerService) {}

  @Post('token')
  @HttpCode(200)
  @ApiConsumes('application/x-www-form-urlencoded')
  @ApiOperation({
    summary: 'Token exchange (RFC 8693): a connector gets the user’s own provider token',
    description:
      'Client authentication: HTTP Basic (client_secret_basic) or client_assertion (private_key_jwt, RFC 7523). ' +
      'grant_type=urn:ietf:params:oauth:grant-type:token-exchange, subject_token (+ subject_token_type), ' +
      'audience=<provider key>, optional scope. No usable connection: 400 consent_required with connect_uri. ' +
      'Too many failed client authentications for the client id or source address: 429 slow_down with Retry-After.',
  })
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
