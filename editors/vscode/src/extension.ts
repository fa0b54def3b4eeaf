// Wiring only: the status bar item, the server, the commands, and a restart when a setting changes.
import * as vscode from 'vscode';
import { registerCommands } from './commands';
import { ClientFactory, DgServer, languageClient } from './server';
import { readSettings, SECTION, serverOptionKeys } from './settings';
import { StatusBar } from './status';

export async function activate(context: vscode.ExtensionContext, createClient: ClientFactory = languageClient): Promise<void> {
  const keys = serverOptionKeys(context.extension.packageJSON);
  const settings = () => readSettings(vscode.workspace.getConfiguration(SECTION), keys);
  const status = new StatusBar(vscode.window.createStatusBarItem(SECTION, vscode.StatusBarAlignment.Right, 100));
  const output = vscode.window.createOutputChannel('dg-lsp', { log: true });
  const server = new DgServer(settings, status, output, createClient);
  context.subscriptions.push(
    status,
    output,
    server,
    ...registerCommands(server),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration(SECTION)) {
        void server.restart();
      }
    }),
  );
  await server.start();
}

export function deactivate(): void {}
