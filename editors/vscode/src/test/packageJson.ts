import { readFileSync } from 'node:fs';
import * as path from 'node:path';

/** The extension's manifest, as VS Code hands it over in `context.extension.packageJSON`. */
export const packageJSON = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
