/**
 * Images for the tests of tenants' logos, made here byte by byte so that every test knows exactly what it
 * sends: PNGs (any size, one colour, extra chunks, bytes after the end), a minimal baseline JPEG (one grey
 * component, every block the same), and a PNG reader for the browser's screenshots.
 */
import { crc32, deflateSync, inflateSync } from 'node:zlib';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/** A `width`×`height` RGBA PNG of one colour (`#rrggbb`), with extra chunks before IDAT and bytes after IEND. */
export function png(
  width: number,
  height: number,
  color = '#00a86b',
  opts: { chunks?: [string, Buffer][]; trailing?: Buffer } = {},
): Buffer {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  const row = Buffer.alloc(1 + width * 4);
  for (let x = 0; x < width; x++) row.set([r, g, b, 255], 1 + x * 4);
  const raw = Buffer.concat(Array.from({ length: height }, () => row));
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 6, 0, 0, 0], 8);
  return Buffer.concat([
    PNG_SIGNATURE,
    pngChunk('IHDR', ihdr),
    ...(opts.chunks ?? []).map(([type, data]) => pngChunk(type, data)),
    pngChunk('IDAT', deflateSync(raw)),
    pngChunk('IEND', Buffer.alloc(0)),
    opts.trailing ?? Buffer.alloc(0),
  ]);
}

/** The chunk types of a PNG, in order. */
export function pngChunkTypes(buf: Buffer): string[] {
  const types: string[] = [];
  for (let pos = 8; pos + 8 <= buf.length;) {
    const length = buf.readUInt32BE(pos);
    types.push(buf.toString('latin1', pos + 4, pos + 8));
    pos += 12 + length;
  }
  return types;
}

const segment = (marker: number, data: Buffer) => {
  const head = Buffer.from([0xff, marker, 0, 0]);
  head.writeUInt16BE(data.length + 2, 2);
  return Buffer.concat([head, data]);
};

/**
 * A baseline JPEG, `width`×`height`, one grey component, every 8×8 block mid-grey: each block is "DC unchanged,
 * end of block" (two one-bit codes). `segments` go after JFIF (APPn, comments), `trailing` after EOI.
 */
export function jpeg(
  width: number,
  height: number,
  opts: { segments?: [number, Buffer][]; trailing?: Buffer } = {},
): Buffer {
  const sof = Buffer.alloc(9);
  sof[0] = 8;
  sof.writeUInt16BE(height, 1);
  sof.writeUInt16BE(width, 3);
  sof.set([1, 1, 0x11, 0], 5);
  // One code of one bit each: DC category 0, and AC end-of-block.
  const huffman = (tableClass: number) =>
    segment(0xc4, Buffer.from([(tableClass << 4) | 0, 1, ...new Array<number>(15).fill(0), 0]));
  const blocks = Math.ceil(width / 8) * Math.ceil(height / 8);
  const bits = '00'.repeat(blocks).padEnd(Math.ceil((blocks * 2) / 8) * 8, '1');
  const scan = Buffer.from(bits.match(/.{8}/g)!.map((b) => parseInt(b, 2)));
  return Buffer.concat([
    Buffer.from([0xff, 0xd8]),
    segment(0xe0, Buffer.from('JFIF\0\x01\x01\0\0\x01\0\x01\0\0', 'latin1')),
    ...(opts.segments ?? []).map(([marker, data]) => segment(marker, data)),
    segment(0xdb, Buffer.from([0, ...new Array<number>(64).fill(1)])),
    segment(0xc0, sof),
    huffman(0),
    huffman(1),
    segment(0xda, Buffer.from([1, 1, 0x00, 0, 63, 0])),
    scan,
    Buffer.from([0xff, 0xd9]),
    opts.trailing ?? Buffer.alloc(0),
  ]);
}

/** Reads an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium's screenshots are). */
export function readPng(buf: Buffer): {
  width: number;
  height: number;
  pixel(x: number, y: number): number[];
} {
  const width = buf.readUInt32BE(16);
  const height = buf.readUInt32BE(20);
  const depth = buf[24];
  const colorType = buf[25];
  if (depth !== 8 || (colorType !== 2 && colorType !== 6) || buf[28] !== 0) {
    throw new Error(`unsupported PNG (depth ${depth}, colour type ${colorType})`);
  }
  const bpp = colorType === 6 ? 4 : 3;
  const idat: Buffer[] = [];
  for (let pos = 8; pos < buf.length;) {
    const length = buf.readUInt32BE(pos);
    if (buf.toString('latin1', pos + 4, pos + 8) === 'IDAT')
      idat.push(buf.subarray(pos + 8, pos + 8 + length));
    pos += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * bpp;
  const out = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    for (let x = 0; x < stride; x++) {
      const v = raw[y * (stride + 1) + 1 + x];
      const a = x >= bpp ? out[y * stride + x - bpp] : 0;
      const b = y > 0 ? out[(y - 1) * stride + x] : 0;
      const c = x >= bpp && y > 0 ? out[(y - 1) * stride + x - bpp] : 0;
      let p: number;
      switch (filter) {
        case 0:
          p = 0;
          break;
        case 1:
          p = a;
          break;
        case 2:
          p = b;
          break;
        case 3:
          p = Math.floor((a + b) / 2);
          break;
        default: {
          const pa = Math.abs(b - c);
          const pb = Math.abs(a - c);
          const pc = Math.abs(a + b - 2 * c);
          p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
        }
      }
      out[y * stride + x] = (v + p) & 0xff;
    }
  }
  return {
    width,
    height,
    pixel: (x, y) => [...out.subarray(y * stride + x * bpp, y * stride + x * bpp + 3)],
  };
}
