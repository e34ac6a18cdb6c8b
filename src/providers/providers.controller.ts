import { Controller, Get, Inject, UseGuards } from '@nestjs/common';
import { ApiBearerAuth, ApiTags } from '@nestjs/swagger';
import { Access, AdminAuthGuard } from '../identity/admin-auth.guard.js';
import { ProviderCatalog, publicProviderView } from './provider-catalog.js';

@ApiTags('providers')
@ApiBearerAuth()
@Controller('v1/providers')
@UseGuards(AdminAuthGuard)
export class ProvidersController {
  constructor(@Inject(ProviderCatalog) private readonly catalog: ProviderCatalog) {}

  /** The catalog is public knowledge, but the API is for key holders of any role. */
  @Get()
  @Access('any_key')
  list() {
    return { items: this.catalog.list().map(publicProviderView) };
  }
}
