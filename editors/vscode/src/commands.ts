// The extension's commands: each turns the editor state into a server command's arguments.
import * as vscode from 'vscode';
import { DgServer } from './server';

export const REWRITE_COMMAND = 'dg-lsp.rewriteSelection';
export const FILL_HOLES_COMMAND = 'dg-lsp.fillHoles';

export async function rewriteSelection(server: DgServer): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (editor === undefined || editor.selection.isEmpty) {
    void vscode.window.showInformationMessage('dg-lsp: select the code to rewrite first');
    return;
  }
  const where = server.location(editor.document, editor.selection);
  await server.executeCommand(REWRITE_COMMAND, where ? [where] : [], 'rewrite selection');
}

export async function fillHoles(server: DgServer): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (editor === undefined) {
    void vscode.window.showInformationMessage('dg-lsp: open a document with holes to fill');
    return;
  }
  const where = server.location(editor.document);
  await server.executeCommand(FILL_HOLES_COMMAND, where ? [where] : [], 'fill holes');
}

/** Ids match `contributes.commands` in package.json. */
export function registerCommands(server: DgServer): vscode.Disposable[] {
  return [
    vscode.commands.registerCommand('dg-lsp.rewrite', () => rewriteSelection(server)),
    vscode.commands.registerCommand('dg-lsp.fill', () => fillHoles(server)),
    vscode.commands.registerCommand('dg-lsp.restart', () => server.restart()),
    vscode.commands.registerCommand('dg-lsp.showLog', () => server.showLog()),
  ];
}
