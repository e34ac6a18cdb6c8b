import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../../src/common/paths.js';

describe('packageRoot', () => {
  it('points at the folder holding package.json', () => {
    expect(fs.existsSync(path.join(packageRoot, 'package.json'))).toBe(true);
  });
});
