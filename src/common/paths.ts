import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageRoot(start: string): string {
  let dir = start;
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${start}`);
    dir = up;
  }
  return dir;
}

/** The package root (package.json, providers/), from src/ under Jest and from dist/src/ at run time. */
export const packageRoot: string = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));
