/**
 * A tenant's uploaded logo, read by its bytes and never by the type it was sent as: a PNG or a JPEG, at most
 * LOGO_MAX_BYTES and LOGO_MAX_SIDE pixels a side, whose structure is walked end to end and rewritten with only
 * what an image needs. Anything else is refused: SVG (it is a document that can carry script), other formats,
 * truncated or malformed files, and polyglots — bytes after the image's end (where a second file is usually
 * hidden) or chunks and segments that do not parse. Text, metadata and animation chunks (PNG tEXt, zTXt, iTXt,
 * eXIf, acTL…; JPEG comments and APPn segments other than JFIF, ICC and Adobe) are dropped, so what is stored and
 * served is only the picture.
 */
import { crc32, inflateSync } from 'node:zlib';

export const LOGO_MAX_BYTES = 64 * 1024;
export const LOGO_MAX_SIDE = 512;

export type LogoContentType = 'image/png' | 'image/jpeg';

export interface LogoImage {
  contentType: LogoContentType;
  /** The rewritten image. */
  bytes: Buffer;
  width: number;
  height: number;
}

/** Why a logo is refused: `unsupported` (not PNG or JPEG, SVG among them), else a malformed or oversized image. */
export type LogoProblem = 'unsupported' | 'svg' | 'too_large' | 'malformed' | 'trailing_data' | 'dimensions';

export class LogoRejected extends Error {
  constructor(
    readonly problem: LogoProblem,
    message: string,
  ) {
    super(message);
  }
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Reads and rewrites a logo; throws LogoRejected. */
export function readLogo(bytes: Buffer): LogoImage {
  if (bytes.length > LOGO_MAX_BYTES) {
    throw new LogoRejected('too_large', `The logo must be at most ${LOGO_MAX_BYTES / 1024} KiB`);
  }
  if (bytes.length >= 8 && bytes.subarray(0, 8).equals(PNG_SIGNATURE)) return readPng(bytes);
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff)
    return readJpeg(bytes);
  if (looksLikeSvg(bytes)) {
    throw new LogoRejected(
      'svg',
      'SVG logos are not accepted (an SVG can carry script); upload a PNG or JPEG',
    );
  }
  throw new LogoRejected('unsupported', 'The logo must be a PNG or JPEG image');
}

function looksLikeSvg(bytes: Buffer): boolean {
  const head = bytes
    .subarray(0, 1024)
    .toString('latin1')
    .replace(/^\uFEFF|^\xEF\xBB\xBF/, '');
  return /^\s*</.test(head) && /<svg[\s>]/i.test(bytes.toString('latin1'));
}

function checkSize(width: number, height: number): void {
  if (width < 1 || height < 1 || width > LOGO_MAX_SIDE || height > LOGO_MAX_SIDE) {
    throw new LogoRejected(
      'dimensions',
      `The logo must be at most ${LOGO_MAX_SIDE}×${LOGO_MAX_SIDE} pixels (it is ${width}×${height})`,
    );
  }
}

const malformed = (what: string) => new LogoRejected('malformed', `The logo is not a valid image: ${what}`);

// --- PNG ----------------------------------------------------------------------------------------------------

/** Ancillary chunks that only change how the pixels look; every other ancillary chunk is dropped. */
const PNG_KEPT_ANCILLARY = new Set(['tRNS', 'gAMA', 'cHRM', 'sRGB', 'iCCP', 'sBIT', 'pHYs']);
/** Channels per colour type, and the bit depths each allows. */
const PNG_COLOR_TYPES: Record<number, { channels: number; depths: number[] }> = {
  0: { channels: 1, depths: [1, 2, 4, 8, 16] },
  2: { channels: 3, depths: [8, 16] },
  3: { channels: 1, depths: [1, 2, 4, 8] },
  4: { channels: 2, depths: [8, 16] },
  6: { channels: 4, depths: [8, 16] },
};
/** Adam7: each pass's first column and row, and its column and row steps. */
const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
];

function readPng(bytes: Buffer): LogoImage {
  const kept: Buffer[] = [PNG_SIGNATURE];
  const idat: Buffer[] = [];
  let header: { width: number; height: number; depth: number; colorType: number; interlace: number } | null =
    null;
  let pos = 8;
  let ended = false;
  let sawPalette = false;
  while (pos < bytes.length) {
    if (pos + 12 > bytes.length) throw malformed('truncated chunk');
    const length = bytes.readUInt32BE(pos);
    const type = bytes.toString('latin1', pos + 4, pos + 8);
    if (!/^[A-Za-z]{4}$/.test(type)) throw malformed('bad chunk type');
    const end = pos + 12 + length;
    if (length > LOGO_MAX_BYTES || end > bytes.length) throw malformed('truncated chunk');
    const data = bytes.subarray(pos + 8, pos + 8 + length);
    if (crc32(bytes.subarray(pos + 4, pos + 8 + length)) !== bytes.readUInt32BE(pos + 8 + length)) {
      throw malformed(`bad checksum in ${type}`);
    }
    const chunk = bytes.subarray(pos, end);
    pos = end;
    if (header === null && type !== 'IHDR') throw malformed('IHDR must come first');
    switch (type) {
      case 'IHDR': {
        if (header !== null || length !== 13) throw malformed('bad IHDR');
        header = {
          width: data.readUInt32BE(0),
          height: data.readUInt32BE(4),
          depth: data[8],
          colorType: data[9],
          interlace: data[12],
        };
        const kind = PNG_COLOR_TYPES[header.colorType];
        if (
          !kind?.depths.includes(header.depth) ||
          data[10] !== 0 ||
          data[11] !== 0 ||
          header.interlace > 1
        ) {
          throw malformed('unsupported IHDR values');
        }
        checkSize(header.width, header.height);
        kept.push(chunk);
        break;
      }
      case 'PLTE':
        if (sawPalette || idat.length > 0 || length === 0 || length % 3 !== 0 || length > 768) {
          throw malformed('bad PLTE');
        }
        sawPalette = true;
        kept.push(chunk);
        break;
      case 'IDAT':
        idat.push(data);
        kept.push(chunk);
        break;
      case 'IEND':
        if (length !== 0) throw malformed('bad IEND');
        ended = true;
        kept.push(chunk);
        break;
      default:
        // An unknown critical chunk (upper-case first letter) means the image cannot be read without it.
        if (type[0] === type[0].toUpperCase()) throw malformed(`unknown critical chunk ${type}`);
        if (PNG_KEPT_ANCILLARY.has(type) && idat.length === 0) kept.push(chunk);
    }
    if (ended) break;
  }
  if (!header || !ended) throw malformed('no IEND');
  if (pos !== bytes.length) {
    throw new LogoRejected(
      'trailing_data',
      'The logo has data after the end of the image; upload a plain image',
    );
  }
  if (idat.length === 0) throw malformed('no image data');
  if (header.colorType === 3 && !sawPalette) throw malformed('palette image without PLTE');
  checkPngPixels(Buffer.concat(idat), header);
  return { contentType: 'image/png', bytes: Buffer.concat(kept), width: header.width, height: header.height };
}

/** Inflates the image data (bounded) and checks that it is exactly the rows the header promises. */
function checkPngPixels(
  compressed: Buffer,
  h: { width: number; height: number; depth: number; colorType: number; interlace: number },
): void {
  const bitsPerPixel = PNG_COLOR_TYPES[h.colorType].channels * h.depth;
  const passes =
    h.interlace === 0
      ? [{ width: h.width, height: h.height }]
      : ADAM7.map(([x0, y0, dx, dy]) => ({
          width: Math.max(0, Math.ceil((h.width - x0) / dx)),
          height: Math.max(0, Math.ceil((h.height - y0) / dy)),
        }));
  let expected = 0;
  for (const p of passes) {
    if (p.width > 0 && p.height > 0) expected += p.height * (1 + Math.ceil((p.width * bitsPerPixel) / 8));
  }
  let raw: Buffer;
  try {
    raw = inflateSync(compressed, { maxOutputLength: expected + 1 });
  } catch {
    throw malformed('image data does not decompress to the declared size');
  }
  if (raw.length !== expected) throw malformed('image data does not match the declared size');
  let at = 0;
  for (const p of passes) {
    if (p.width === 0 || p.height === 0) continue;
    const rowBytes = Math.ceil((p.width * bitsPerPixel) / 8);
    for (let y = 0; y < p.height; y++) {
      if (raw[at] > 4) throw malformed('bad row filter');
      at += 1 + rowBytes;
    }
  }
}

// --- JPEG ---------------------------------------------------------------------------------------------------

/** Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic). */
const SOF = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);
/** Table and restart-interval segments an image needs: DHT, DAC, DQT, DRI. */
const JPEG_TABLES = new Set([0xc4, 0xcc, 0xdb, 0xdd]);

function readJpeg(bytes: Buffer): LogoImage {
  const kept: Buffer[] = [bytes.subarray(0, 2)];
  let pos = 2;
  let size: { width: number; height: number } | null = null;
  let scans = 0;
  for (;;) {
    if (pos >= bytes.length || bytes[pos] !== 0xff) throw malformed('expected a marker');
    while (pos < bytes.length && bytes[pos] === 0xff) pos++;
    if (pos >= bytes.length) throw malformed('truncated');
    const marker = bytes[pos++];
    if (marker === 0xd9) {
      kept.push(Buffer.from([0xff, 0xd9]));
      break;
    }
    if (pos + 2 > bytes.length) throw malformed('truncated segment');
    const length = bytes.readUInt16BE(pos);
    const end = pos + length;
    if (length < 2 || end > bytes.length) throw malformed('truncated segment');
    const segment = Buffer.concat([Buffer.from([0xff, marker]), bytes.subarray(pos, end)]);
    const data = bytes.subarray(pos + 2, end);
    pos = end;
    if (SOF.has(marker)) {
      if (size !== null || data.length < 6) throw malformed('bad frame header');
      size = { height: data.readUInt16BE(1), width: data.readUInt16BE(3) };
      checkSize(size.width, size.height);
      kept.push(segment);
    } else if (JPEG_TABLES.has(marker)) {
      kept.push(segment);
    } else if (marker === 0xda) {
      if (size === null) throw malformed('scan before the frame header');
      scans++;
      // The entropy-coded data runs to the next marker that is neither a stuffed 0xFF00 nor a restart marker.
      const start = pos;
      while (pos < bytes.length) {
        if (bytes[pos] === 0xff) {
          const next = bytes[pos + 1];
          if (next === undefined) throw malformed('truncated scan');
          if (next !== 0x00 && !(next >= 0xd0 && next <= 0xd7) && next !== 0xff) break;
        }
        pos++;
      }
      if (pos >= bytes.length) throw malformed('truncated scan');
      kept.push(segment, bytes.subarray(start, pos));
    } else if (marker >= 0xe0 && marker <= 0xef) {
      // JFIF (APP0), an ICC profile (APP2) and Adobe's colour transform (APP14) change how the image looks;
      // Exif, XMP and every other application segment are metadata and are dropped.
      const tag = data.toString('latin1', 0, 12);
      if (
        (marker === 0xe0 && tag.startsWith('JFIF\0')) ||
        (marker === 0xe2 && tag === 'ICC_PROFILE\0') ||
        (marker === 0xee && tag.startsWith('Adobe'))
      ) {
        kept.push(segment);
      }
    } else if (marker !== 0xfe) {
      // Not a comment (dropped) either: a marker a plain image does not use.
      throw malformed(`unexpected marker 0xFF${marker.toString(16).toUpperCase()}`);
    }
  }
  if (size === null || scans === 0) throw malformed('no image data');
  if (pos !== bytes.length) {
    throw new LogoRejected(
      'trailing_data',
      'The logo has data after the end of the image; upload a plain image',
    );
  }
  return { contentType: 'image/jpeg', bytes: Buffer.concat(kept), ...size };
}
