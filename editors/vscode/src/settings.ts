// Settings -> how to start the server and its `initializationOptions`. Pure: every function takes the
// configuration it reads, so tests pass a plain object instead of VS Code's.

import * as path from 'path';

export const SECTION = 'dg-lsp';

/** Keys under `dg-lsp.` that configure this extension, not the server. */
const CLIENT_PREFIXES = ['server.', 'trace.'];

/** The part of `vscode.WorkspaceConfiguration` this module reads. */
export interface Configuration {
  get<T>(key: string): T | undefined;
  inspect<T>(key: string): { globalValue?: T; workspaceValue?: T; workspaceFolderValue?: T } | undefined;
}

export interface ServerCommand {
  command: string;
  args: string[];
  options?: { cwd?: string };
}

export interface Settings {
  command: ServerCommand;
  languages: string[];
  initializationOptions: Record<string, unknown>;
}

/**
 * `server.pythonPath` (run `python -m dg_lsp.cli`) wins over `server.command` (default `dg-lsp`). `-m` puts
 * the working directory first on `sys.path`, where a workspace's own `engine.py` would shadow the
 * server's `engine` package: the module runs from the interpreter's directory instead.
 */
export function serverCommand(config: Configuration): ServerCommand {
  const python = (config.get<string>('server.pythonPath') ?? '').trim();
  if (python) {
    const cwd = path.isAbsolute(python) ? { options: { cwd: path.dirname(python) } } : {};
    return { command: python, args: ['-m', 'dg_lsp.cli'], ...cwd };
  }
  const raw = config.get<string[] | string>('server.command') ?? ['dg-lsp'];
  const parts = (typeof raw === 'string' ? [raw] : raw).filter((p) => typeof p === 'string' && p !== '');
  return parts.length > 0 ? { command: parts[0], args: parts.slice(1) } : { command: 'dg-lsp', args: [] };
}

/** The server option keys among the extension's declared settings (`package.json` contributes). */
export function serverOptionKeys(packageJSON: { contributes?: { configuration?: { properties?: object } } }): string[] {
  const declared = Object.keys(packageJSON.contributes?.configuration?.properties ?? {});
  return declared
    .filter((key) => key.startsWith(`${SECTION}.`))
    .map((key) => key.slice(SECTION.length + 1))
    .filter((key) => !CLIENT_PREFIXES.some((prefix) => key.startsWith(prefix)));
}

/**
 * Nested `initializationOptions` from the settings the user set explicitly (`model.path` ->
 * `{model: {path}}`). Settings left at their default are not sent: the server owns the defaults and
 * validates every value, naming any bad key in a message.
 */
export function initializationOptions(config: Configuration, keys: string[]): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const key of keys) {
    const seen = config.inspect<unknown>(key);
    const value = seen?.workspaceFolderValue ?? seen?.workspaceValue ?? seen?.globalValue;
    if (value === undefined) {
      continue;
    }
    const path = key.split('.');
    let node = options;
    for (const part of path.slice(0, -1)) {
      const child = node[part];
      node = (typeof child === 'object' && child !== null ? child : (node[part] = {})) as Record<string, unknown>;
    }
    node[path[path.length - 1]] = value;
  }
  return options;
}

export function readSettings(config: Configuration, keys: string[]): Settings {
  const languages = config.get<string[]>('server.languages') ?? ['python'];
  return { command: serverCommand(config), languages, initializationOptions: initializationOptions(config, keys) };
}
