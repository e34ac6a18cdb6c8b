import { Controller, Get, Inject } from '@nestjs/common';
import { ApiBearerAuth, ApiTags } from '@nestjs/swagger';
import { Access } from '../common/admin-access.js';
import { ProviderCatalog, publicProviderView } from './provider-catalog.js';

@ApiTags('providers')
@ApiBearerAuth()
@Controller('v1/providers')
export class ProvidersController {
  constructor(@Inject(ProviderCatalog) private readonly catalog: ProviderCatalog) {}

  /** The catalog is public knowledge, but the API is for key holders of any role. */
  @Get()
  @Access('any_key')
  list() {
    return { items: this.catalog.list().map(publicProviderView) };
  }
}
