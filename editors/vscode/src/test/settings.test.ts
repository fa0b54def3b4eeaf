import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { Configuration, initializationOptions, readSettings, serverCommand, serverOptionKeys } from '../settings';
import { packageJSON } from './packageJson';

type Values = Record<string, { globalValue?: unknown; workspaceValue?: unknown; workspaceFolderValue?: unknown }>;

function config(values: Values): Configuration {
  return {
    inspect: <T>(key: string) => values[key] as { globalValue?: T } | undefined,
    get: <T>(key: string) => {
      const v = values[key];
      return (v?.workspaceFolderValue ?? v?.workspaceValue ?? v?.globalValue) as T | undefined;
    },
  };
}

test('the server command defaults to dg-lsp', () => {
  assert.deepEqual(serverCommand(config({})), { command: 'dg-lsp', args: [] });
});

test('server.command may carry arguments', () => {
  const c = config({ 'server.command': { globalValue: ['/opt/dg/bin/dg-lsp', '--log-file', '/tmp/dg.log'] } });
  assert.deepEqual(serverCommand(c), { command: '/opt/dg/bin/dg-lsp', args: ['--log-file', '/tmp/dg.log'] });
});

test('server.pythonPath runs the module and wins over server.command', () => {
  const c = config({ 'server.pythonPath': { workspaceValue: '/w/.venv/bin/python' },
    'server.command': { globalValue: ['elsewhere'] } });
  assert.deepEqual(serverCommand(c), { command: '/w/.venv/bin/python', args: ['-m', 'dg_lsp.cli'],
    options: { cwd: '/w/.venv/bin' } });
});

test('server option keys come from package.json, without the client keys', () => {
  const keys = serverOptionKeys(packageJSON);
  for (const key of ['backend', 'model.path', 'model.device', 'sampler.steps', 'inline.lineCanvas', 'holes.marker']) {
    assert.ok(keys.includes(key), `${key} in ${keys}`);
  }
  assert.ok(!keys.some((k) => k.startsWith('server.') || k.startsWith('trace.')), `${keys}`);
});

test('only settings the user set are sent, nested, workspace over global', () => {
  const keys = ['model.path', 'model.device', 'sampler.steps', 'inline.enable', 'backend'];
  const options = initializationOptions(config({
    'model.path': { globalValue: '/ckpt' },
    'model.device': { globalValue: 'cpu', workspaceValue: 'cuda:1' },
    'inline.enable': { workspaceFolderValue: false },
  }), keys);
  assert.deepEqual(options, { model: { path: '/ckpt', device: 'cuda:1' }, inline: { enable: false } });
});

test('an explicit null is sent (it selects the embedded model)', () => {
  assert.deepEqual(initializationOptions(config({ 'model.path': { globalValue: null } }), ['model.path']),
    { model: { path: null } });
});

test('readSettings bundles the command, the languages and the options', () => {
  const s = readSettings(config({ 'server.languages': { globalValue: ['python', 'cython'] },
    'sampler.steps': { globalValue: 4 } }), ['sampler.steps']);
  assert.deepEqual(s, { command: { command: 'dg-lsp', args: [] }, languages: ['python', 'cython'],
    initializationOptions: { sampler: { steps: 4 } } });
});
