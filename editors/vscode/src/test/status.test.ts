import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import * as vscode from 'vscode';
import { describe, StatusBar } from '../status';
import { FakeStatusBarItem } from './vscode';

test('before the server speaks the item says it is starting', () => {
  assert.equal(describe(undefined).text, '$(sync~spin) dg');
});

test('model loading shows the progress percentage and message', () => {
  const view = describe({ state: 'loading' }, { kind: 'report', title: 'dg-lsp: loading model', message: 'weights',
    percentage: 42.4 });
  assert.equal(view.text, '$(sync~spin) dg 42%');
  assert.equal(view.tooltip, 'dg-lsp: loading model: weights');
});

test('ready shows model, device and the last latency', () => {
  const view = describe({ state: 'ready', model: '/models/dg-small', device: 'cuda:0', kernels: 'triton',
    lastLatencyMs: 37.6 });
  assert.equal(view.text, '$(sparkle) dg dg-small · cuda:0 · 38 ms');
  assert.match(view.tooltip, /model \/models\/dg-small/);
  assert.match(view.tooltip, /kernels triton/);
  assert.equal(view.error, false);
});

test('ready before any completion has no latency', () => {
  assert.equal(describe({ state: 'ready', model: 'fake', device: 'cpu', lastLatencyMs: null }).text, '$(sparkle) dg fake · cpu');
});

test('a failed load and a stopped server are errors', () => {
  assert.equal(describe({ state: 'error' }).error, true);
  const stopped = describe({ state: 'ready' }, undefined, 'the server stopped');
  assert.equal(stopped.text, '$(circle-slash) dg');
  assert.match(stopped.tooltip, /Restart server/);
});

test('StatusBar follows progress, status and stop', () => {
  const item = new FakeStatusBarItem('dg-lsp', 2);
  const bar = new StatusBar(item as unknown as vscode.StatusBarItem);
  assert.ok(item.visible);
  assert.equal(item.command, 'dg-lsp.showLog');
  bar.onProgress({ kind: 'begin', title: 'dg-lsp: loading model', percentage: 0 });
  bar.onProgress({ kind: 'report', percentage: 50 });
  assert.equal(item.text, '$(sync~spin) dg 50%');
  bar.onProgress({ kind: 'end' });
  bar.update({ state: 'ready', model: 'fake', device: 'cpu', kernels: 'none', lastLatencyMs: 3 });
  assert.equal(item.text, '$(sparkle) dg fake · cpu · 3 ms');
  assert.equal(item.backgroundColor, undefined);
  bar.stopped('the server stopped');
  assert.equal(item.text, '$(circle-slash) dg');
  assert.equal((item.backgroundColor as unknown as { id: string }).id, 'statusBarItem.errorBackground');
});

test('a long completion shows how many lines it has so far, its text in the tooltip', () => {
  const view = describe({ state: 'ready', model: 'fake', device: 'cpu' },
    { kind: 'report', title: 'dg-lsp: completing', message: 'total = a\n    total += b\n' });
  assert.equal(view.text, '$(sync~spin) dg-lsp: completing… 2 lines');
  assert.equal(view.tooltip, 'dg-lsp: completing…\ntotal = a\n    total += b\n');
  assert.equal(describe({ state: 'ready' }, { kind: 'report', title: 'dg-lsp: completing', message: 'x = 1' }).text,
    '$(sync~spin) dg-lsp: completing… 1 line');
  assert.equal(describe({ state: 'ready' }, { kind: 'begin', title: 'dg-lsp: completing' }).text,
    '$(sync~spin) dg-lsp: completing…');
});

test('StatusBar keeps a newer completion when an older one ends after it began', () => {
  const item = new FakeStatusBarItem('dg-lsp', 2);
  const bar = new StatusBar(item as unknown as vscode.StatusBarItem);
  bar.update({ state: 'ready', model: 'fake', device: 'cpu', lastLatencyMs: 3 });
  bar.onProgress({ kind: 'begin', title: 'dg-lsp: completing' }, 'c1');
  bar.onProgress({ kind: 'report', message: 'a\nb\nc' }, 'c1');
  bar.onProgress({ kind: 'begin', title: 'dg-lsp: completing' }, 'c2');
  bar.onProgress({ kind: 'report', message: 'x\n' }, 'c2');
  bar.onProgress({ kind: 'end' }, 'c1');
  assert.equal(item.text, '$(sync~spin) dg-lsp: completing… 1 line');
  bar.onProgress({ kind: 'end' }, 'c2');
  assert.equal(item.text, '$(sparkle) dg fake · cpu · 3 ms');
});
