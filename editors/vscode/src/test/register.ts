// Preloaded by `npm test` (node --require): `require('vscode')` resolves to the hand-written mock, since
// the real module exists only inside VS Code.
import Module = require('module');
import * as path from 'path';

const mockPath = path.join(__dirname, 'vscode.js');
const resolve = (Module as unknown as { _resolveFilename: (request: string, ...rest: unknown[]) => string });
const original = resolve._resolveFilename;
resolve._resolveFilename = function (request: string, ...rest: unknown[]): string {
  return request === 'vscode' ? mockPath : original.call(this, request, ...rest);
};
