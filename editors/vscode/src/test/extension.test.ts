import * as assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';
import * as vscode from 'vscode';
import { activate } from '../extension';
import { factory, FakeClient } from './fakeClient';
import { packageJSON } from './packageJson';
import { mock, Position, Selection, Uri, window } from './vscode';

const URI = 'file:///work/demo.py';

async function activated() {
  const made = factory();
  const context = { subscriptions: [] as { dispose(): unknown }[], extension: { packageJSON } };
  await activate(context as unknown as vscode.ExtensionContext, made.create);
  const item = mock.statusItems[0];
  return { ...made, context, item, client: () => made.clients[made.clients.length - 1] };
}

function select(startLine: number, startChar: number, endLine: number, endChar: number): void {
  window.activeTextEditor = {
    document: { uri: Uri.parse(URI) },
    selection: new Selection(new Position(startLine, startChar), new Position(endLine, endChar)),
  };
}

/** Let queued restarts (promise chains) finish. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

beforeEach(() => mock.reset());

test('activation starts one client with the settings and registers every contributed command', async () => {
  mock.settings.set('dg-lsp.model.device', { globalValue: 'cpu' });
  mock.settings.set('dg-lsp.server.pythonPath', { globalValue: '/venv/bin/python' });
  const { clients, item, context } = await activated();
  assert.equal(clients.length, 1);
  assert.ok(clients[0].running);
  assert.deepEqual(clients[0].settings.command, { command: '/venv/bin/python', args: ['-m', 'dg_lsp.cli'],
    options: { cwd: '/venv/bin' } });
  assert.deepEqual(clients[0].settings.initializationOptions, { model: { device: 'cpu' } });
  const contributed = packageJSON.contributes.commands.map((c: { command: string }) => c.command).sort();
  assert.deepEqual([...mock.commands.keys()].sort(), contributed);
  assert.ok(item.visible);
  assert.ok(context.subscriptions.length >= contributed.length + 3);
});

test('dg/status notifications and load progress update the status bar item', async () => {
  const { client, item } = await activated();
  const c = client();
  const create = c.requests.get('window/workDoneProgress/create');
  assert.ok(create, 'the progress feature handles window/workDoneProgress/create');
  create({ token: 'dg-lsp/load/1' });
  c.notifications.get('dg/status')!({ model: null, device: null, kernels: null, state: 'loading', lastLatencyMs: null });
  c.progress.get('dg-lsp/load/1')!({ kind: 'begin', title: 'dg-lsp: loading model', percentage: 0 });
  c.progress.get('dg-lsp/load/1')!({ kind: 'report', message: 'loading weights', percentage: 60 });
  assert.equal(item.text, '$(sync~spin) dg 60%');
  c.progress.get('dg-lsp/load/1')!({ kind: 'end', message: 'loaded' });
  assert.ok(!c.progress.has('dg-lsp/load/1'), 'the progress listener is released at the end');
  c.notifications.get('dg/status')!({ model: 'dg-small', device: 'cuda:0', kernels: 'triton', state: 'ready',
    lastLatencyMs: 12.2 });
  assert.equal(item.text, '$(sparkle) dg dg-small · cuda:0 · 12 ms');
});

test('the client asks for completion progress and the status bar shows it until its end', async () => {
  const { client, item } = await activated();
  const c = client();
  const capabilities: { window?: { workDoneProgress?: boolean }; experimental?: Record<string, unknown> } = {
    experimental: { other: 1 } };
  c.features.forEach((feature) => feature.fillClientCapabilities(capabilities as never));
  assert.deepEqual(capabilities, { window: { workDoneProgress: true }, experimental: { other: 1, dgCompletionProgress: true } });
  c.notifications.get('dg/status')!({ model: 'fake', device: 'cpu', kernels: 'none', state: 'ready', lastLatencyMs: 4 });
  c.requests.get('window/workDoneProgress/create')!({ token: 'dg-lsp/complete/2' });
  const progress = c.progress.get('dg-lsp/complete/2')!;
  progress({ kind: 'begin', title: 'dg-lsp: completing', cancellable: false });
  progress({ kind: 'report', message: 'total = a\n' });
  assert.equal(item.text, '$(sync~spin) dg-lsp: completing… 1 line');
  progress({ kind: 'report', message: 'total = a\n    total += b\n    return total' });
  assert.equal(item.text, '$(sync~spin) dg-lsp: completing… 3 lines');
  assert.match(item.tooltip as string, /return total/);
  progress({ kind: 'end' });
  assert.equal(item.text, '$(sparkle) dg fake · cpu · 4 ms');
  assert.ok(!c.progress.has('dg-lsp/complete/2'), 'the progress listener is released at the end');
});

test('Rewrite selection sends the selection to dg-lsp.rewriteSelection', async () => {
  const { client } = await activated();
  select(2, 4, 3, 10);
  await vscode.commands.executeCommand('dg-lsp.rewrite');
  assert.deepEqual(client().sent, [{ method: 'workspace/executeCommand', params: {
    command: 'dg-lsp.rewriteSelection',
    arguments: [{ uri: URI, range: { start: { line: 2, character: 4 }, end: { line: 3, character: 10 } } }],
  } }]);
});

test('Rewrite selection with nothing selected asks for a selection and sends nothing', async () => {
  const { client } = await activated();
  select(1, 0, 1, 0);
  await vscode.commands.executeCommand('dg-lsp.rewrite');
  assert.deepEqual(client().sent, []);
  assert.match(mock.messages[0].text, /select the code/);
});

test('Fill holes sends the document to dg-lsp.fillHoles', async () => {
  const { client } = await activated();
  select(0, 0, 0, 0);
  await vscode.commands.executeCommand('dg-lsp.fill');
  assert.deepEqual(client().sent, [{ method: 'workspace/executeCommand',
    params: { command: 'dg-lsp.fillHoles', arguments: [{ uri: URI }] } }]);
});

test('a command the server refuses shows its message', async () => {
  const { client } = await activated();
  client().reply = () => { throw new Error('rewrite is disabled: set option rewrite.enable to true'); };
  select(0, 0, 0, 3);
  await vscode.commands.executeCommand('dg-lsp.rewrite');
  assert.deepEqual(mock.messages, [{ level: 'error',
    text: 'dg-lsp: rewrite selection failed: rewrite is disabled: set option rewrite.enable to true' }]);
});

test('changing a dg-lsp setting restarts the server with the new options', async () => {
  const { clients } = await activated();
  mock.setSetting('dg-lsp.sampler.steps', 4);
  await settle();
  assert.equal(clients.length, 2);
  assert.ok(clients[0].disposed && !clients[1].disposed && clients[1].running);
  assert.deepEqual(clients[1].settings.initializationOptions, { sampler: { steps: 4 } });
  mock.setSetting('editor.fontSize', 20);
  await settle();
  assert.equal(clients.length, 2, 'other settings leave the server alone');
});

test('Restart server replaces the client; a stop it asked for is not reported as a crash', async () => {
  const { clients, item } = await activated();
  await vscode.commands.executeCommand('dg-lsp.restart');
  assert.equal(clients.length, 2);
  assert.ok(clients[0].disposed && clients[1].running);
  assert.equal(item.text, '$(sync~spin) dg');
});

test('a server that dies shows as stopped, and commands say it is not running', async () => {
  const { client, item } = await activated();
  client().crash();
  assert.equal(item.text, '$(circle-slash) dg');
  select(0, 0, 0, 3);
  await vscode.commands.executeCommand('dg-lsp.rewrite');
  assert.match(mock.messages[0].text, /not running/);
});

test('a server that cannot start shows the command and how to fix it', async () => {
  const made = factory();
  const create = (settings: Parameters<typeof made.create>[0]) => {
    const client = made.create(settings);
    (client as unknown as FakeClient).failStart = new Error('spawn dg-lsp ENOENT');
    return client;
  };
  const context = { subscriptions: [], extension: { packageJSON } };
  await activate(context as unknown as vscode.ExtensionContext, create);
  assert.equal(mock.messages.length, 1);
  assert.match(mock.messages[0].text, /could not start `dg-lsp` \(spawn dg-lsp ENOENT\)/);
  assert.match(mock.messages[0].text, /dg-lsp\.server\.pythonPath/);
  assert.equal(mock.statusItems[0].text, '$(circle-slash) dg');
});

test('Show server log opens the output channel', async () => {
  await activated();
  await vscode.commands.executeCommand('dg-lsp.showLog');
  assert.equal(mock.logShown, 1);
});
