import { Controller, Get, Inject } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import { Access } from '../common/admin-access.js';
import { ApiAdminErrors, ApiJsonResponse, zodSchema } from '../common/openapi.js';
import { anthropicExample, githubExample, providerListSchema } from './providers.openapi.js';
import { ProviderCatalog, publicProviderView } from './provider-catalog.js';

@ApiTags('providers')
@ApiBearerAuth()
@ApiAdminErrors()
@Controller('v1/providers')
export class ProvidersController {
  constructor(@Inject(ProviderCatalog) private readonly catalog: ProviderCatalog) {}

  /** The catalog is public knowledge, but the API is for key holders of any role. */
  @Get()
  @Access('any_key')
  @ApiOperation({
    summary: 'The provider catalog',
    description:
      'Any admin key. The providers Custos knows (providers/*.yaml): key, name, auth mode, default scopes and ' +
      'public OAuth endpoints — what a client needs to know, nothing about how Custos calls them. A tenant’s ' +
      'custom providers are at `GET /v1/tenants/{tenantId}/providers`.',
  })
  @ApiJsonResponse(200, 'The catalog, by key.', zodSchema(providerListSchema, 'output'), {
    items: [anthropicExample, githubExample],
  })
  list() {
    return { items: this.catalog.list().map(publicProviderView) };
  }
}
