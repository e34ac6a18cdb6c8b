import fc from 'fast-check';
import { isRefusedAddress, parseAllowHosts } from '../../../src/common/outbound-http.js';

describe('isRefusedAddress', () => {
  it.each([
    // IPv4 special-purpose blocks
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'this network (0/8)'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.0.0.1', 'private 10/8'],
    ['172.16.0.1', 'private 172.16/12'],
    ['172.31.255.255', 'private 172.16/12'],
    ['192.168.1.1', 'private 192.168/16'],
    ['169.254.169.254', 'cloud metadata (link-local)'],
    ['169.254.0.1', 'link-local'],
    ['100.64.0.1', 'CGNAT'],
    ['100.127.255.255', 'CGNAT'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['240.0.0.1', 'reserved 240/4'],
    ['192.0.0.8', 'IETF protocol assignments'],
    ['192.0.2.1', 'documentation TEST-NET-1'],
    ['198.51.100.1', 'documentation TEST-NET-2'],
    ['203.0.113.1', 'documentation TEST-NET-3'],
    ['198.18.0.1', 'benchmarking'],
    // IPv6
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['[::1]', 'bracketed loopback'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local with zone'],
    ['fd00::1', 'unique-local'],
    ['fc00::1', 'unique-local'],
    ['fd00:ec2::254', 'AWS metadata (IPv6)'],
    ['ff02::1', 'multicast'],
    ['fec0::1', 'deprecated site-local'],
    ['2001:db8::1', 'documentation'],
    ['3fff::1', 'documentation (RFC 9637)'],
    ['100::1', 'discard'],
    ['2001::1', 'Teredo'],
    // IPv6 forms embedding a refused IPv4
    ['::ffff:127.0.0.1', 'IPv4-mapped loopback'],
    ['::ffff:7f00:1', 'IPv4-mapped loopback (hex)'],
    ['::ffff:a9fe:a9fe', 'IPv4-mapped metadata'],
    ['::ffff:10.0.0.1', 'IPv4-mapped private'],
    ['::ffff:0.0.0.0', 'IPv4-mapped unspecified'],
    ['::127.0.0.1', 'IPv4-compatible loopback'],
    ['::7f00:1', 'IPv4-compatible loopback (hex)'],
    ['::8.8.8.8', 'IPv4-compatible (deprecated form, refused whatever it embeds)'],
    ['::ffff:0:7f00:1', 'IPv4-translated'],
    ['64:ff9b::7f00:1', 'NAT64 loopback'],
    ['64:ff9b::a9fe:a9fe', 'NAT64 metadata'],
    ['64:ff9b::10.0.0.1', 'NAT64 private'],
    ['64:ff9b:1::808:808', 'local-use NAT64 (RFC 8215)'],
    ['2002:7f00:1::', '6to4 of loopback'],
    ['2002:a9fe:a9fe::1', '6to4 of metadata'],
    ['2002:808:808::1', '6to4 (tunnel form, refused whatever it embeds)'],
    // Not canonical literals: refused rather than interpreted
    ['0x7f000001', 'hex integer'],
    ['2130706433', 'decimal integer'],
    ['0177.0.0.1', 'octal'],
    ['127.1', 'short form'],
    ['0x08080808', 'hex form of a public address'],
    ['localhost', 'a name'],
    ['', 'empty'],
    ['1.2.3.4.5', 'garbage'],
  ])('refuses %s (%s)', (ip) => {
    expect(isRefusedAddress(ip)).toBe(true);
  });

  it.each([
    ['8.8.8.8'],
    ['1.1.1.1'],
    ['93.184.215.14'],
    ['100.63.255.255'],
    ['100.128.0.0'],
    ['172.15.255.255'],
    ['172.32.0.0'],
    ['169.253.255.255'],
    ['2606:4700:4700::1111'],
    ['2a00:1450:4001:80b::200e'],
    ['::ffff:8.8.8.8'],
    ['::ffff:808:808'],
    ['64:ff9b::808:808'],
  ])('allows public %s', (ip) => {
    expect(isRefusedAddress(ip)).toBe(false);
  });

  const octet = fc.integer({ min: 0, max: 255 });
  const refusedIPv4 = fc.oneof(
    fc.tuple(octet, octet, octet).map(([b, c, d]) => [127, b, c, d]),
    fc.tuple(octet, octet, octet).map(([b, c, d]) => [10, b, c, d]),
    fc.tuple(octet, octet).map(([c, d]) => [169, 254, c, d]),
  );

  it('refuses every address in 127/8, 10/8 and 169.254/16, and their IPv6 embeddings', () => {
    fc.assert(
      fc.property(refusedIPv4, (octets) => {
        const dotted = octets.join('.');
        const hex = `${((octets[0] << 8) | octets[1]).toString(16)}:${((octets[2] << 8) | octets[3]).toString(16)}`;
        for (const form of [
          dotted,
          `::ffff:${dotted}`,
          `::ffff:${hex}`,
          `[::ffff:${hex}]`,
          `::${hex}`,
          `64:ff9b::${hex}`,
          `2002:${hex}::1`,
        ]) {
          expect([form, isRefusedAddress(form)]).toEqual([form, true]);
        }
      }),
    );
  });
});

describe('parseAllowHosts', () => {
  it('is empty for an unset or blank variable', () => {
    expect(parseAllowHosts(undefined)).toEqual([]);
    expect(parseAllowHosts('')).toEqual([]);
    expect(parseAllowHosts(' , ,')).toEqual([]);
  });

  it('splits on commas, trims, lower-cases and normalises hosts the way URLs do', () => {
    expect(
      parseAllowHosts(
        ' Keycloak.Internal , 127.0.0.1:8080,[::1]:9000,[0:0::1],::1, vault:8200 ,bücher.example',
      ),
    ).toEqual([
      'keycloak.internal',
      '127.0.0.1:8080',
      '[::1]:9000',
      '[::1]',
      '[::1]',
      'vault:8200',
      'xn--bcher-kva.example',
    ]);
  });

  it.each([
    ['http://vault:8200'],
    ['vault:'],
    ['vault:0'],
    ['vault:65536'],
    ['vault:80a'],
    ['user@vault'],
    ['vault/path'],
    ['[::1'],
    ['[::1]8080'],
    ['1:2:3'],
    ['a b'],
  ])('refuses the entry %j, naming the variable', (entry) => {
    expect(() => parseAllowHosts(`ok.example,${entry}`)).toThrow(/CUSTOS_OUTBOUND_ALLOW_HOSTS/);
  });
});
