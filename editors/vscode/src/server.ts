// Creates, starts, stops and restarts the language client. Each start reads the settings afresh, so a
// restart is how a settings change reaches the server (as `initializationOptions`).
import * as vscode from 'vscode';
import {
  ExecuteCommandRequest,
  FeatureState,
  LanguageClient,
  LanguageClientOptions,
  State,
  StaticFeature,
  WorkDoneProgress,
  WorkDoneProgressCreateRequest,
} from 'vscode-languageclient/node';
import { SECTION, Settings } from './settings';
import { LoadProgress, ServerStatus, StatusBar } from './status';

export const STATUS_NOTIFICATION = 'dg/status';

/** The part of a `LanguageClient` used here; tests hand in a fake through `ClientFactory`. */
export type Client = Pick<LanguageClient,
  'start' | 'dispose' | 'isRunning' | 'onNotification' | 'onRequest' | 'onProgress' | 'onDidChangeState' |
  'registerFeature' | 'sendRequest' | 'code2ProtocolConverter'>;

export type ClientFactory = (settings: Settings, output: vscode.LogOutputChannel) => Client;

export function languageClient(settings: Settings, output: vscode.LogOutputChannel): Client {
  const clientOptions: LanguageClientOptions = {
    documentSelector: settings.languages.flatMap((language) => [
      { scheme: 'file', language },
      { scheme: 'untitled', language },
    ]),
    initializationOptions: settings.initializationOptions,
    outputChannel: output,
  };
  return new LanguageClient(SECTION, 'dg-lsp', settings.command, clientOptions);
}

/**
 * The server's work-done progress goes to the status bar item (in place of the client's own progress
 * display): the model load, and long completions, which the server reports on tokens it creates because
 * the client declares `experimental.dgCompletionProgress` (docs/lsp.md, "Progress of a long completion").
 */
export class LoadProgressFeature implements StaticFeature {
  private readonly listeners = new Map<string | number, vscode.Disposable>();

  constructor(private readonly client: Client, private readonly status: StatusBar) {}

  fillClientCapabilities(capabilities: { window?: { workDoneProgress?: boolean }; experimental?: unknown }): void {
    (capabilities.window ??= {}).workDoneProgress = true;
    const experimental = typeof capabilities.experimental === 'object' && capabilities.experimental !== null
      ? capabilities.experimental : {};
    capabilities.experimental = { ...experimental, dgCompletionProgress: true };
  }

  initialize(): void {
    this.client.onRequest(WorkDoneProgressCreateRequest.type, ({ token }) => {
      this.listeners.set(token, this.client.onProgress(WorkDoneProgress.type, token, (value) => {
        this.status.onProgress(value as LoadProgress, token);
        if (value.kind === 'end') {
          this.listeners.get(token)?.dispose();
          this.listeners.delete(token);
        }
      }));
    });
  }

  getState(): FeatureState {
    return { kind: 'static' };
  }

  clear(): void {
    this.listeners.forEach((listener) => listener.dispose());
    this.listeners.clear();
  }
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class DgServer implements vscode.Disposable {
  private client?: Client;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly settings: () => Settings,
    private readonly status: StatusBar,
    private readonly output: vscode.LogOutputChannel,
    private readonly createClient: ClientFactory = languageClient,
  ) {}

  /** Starts, stops and restarts run one after another, never interleaved. */
  private enqueue(step: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(step, step);
    return this.queue;
  }

  start(): Promise<void> {
    return this.enqueue(() => this.startClient());
  }

  stop(): Promise<void> {
    return this.enqueue(() => this.stopClient());
  }

  restart(): Promise<void> {
    return this.enqueue(async () => {
      await this.stopClient();
      await this.startClient();
    });
  }

  private async startClient(): Promise<void> {
    const settings = this.settings();
    const client = this.createClient(settings, this.output);
    this.client = client;
    this.status.starting();
    client.onNotification(STATUS_NOTIFICATION, (status: ServerStatus) => this.status.update(status));
    client.registerFeature(new LoadProgressFeature(client, this.status));
    client.onDidChangeState(({ newState }) => {
      if (newState === State.Stopped && this.client === client) {
        this.status.stopped('the server stopped');
      }
    });
    try {
      await client.start();
    } catch (error) {
      const command = [settings.command.command, ...settings.command.args].join(' ');
      this.status.stopped(`could not start ${command}`);
      void vscode.window.showErrorMessage(
        `dg-lsp: could not start \`${command}\` (${reason(error)}). Set dg-lsp.server.command or ` +
          'dg-lsp.server.pythonPath to a dg-lsp installation.');
    }
  }

  private async stopClient(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client !== undefined) {
      try {
        await client.dispose(2000);
      } catch (error) {
        this.output.warn(`dg-lsp: stopping the server: ${reason(error)}`);
      }
    }
  }

  /** `{uri, range}` of a document span in the protocol's terms (the client's converters). */
  location(document: vscode.TextDocument, range?: vscode.Range): { uri: string; range?: object } | undefined {
    const c2p = this.client?.code2ProtocolConverter;
    if (c2p === undefined) {
      return undefined;
    }
    return range === undefined ? { uri: c2p.asUri(document.uri) } : { uri: c2p.asUri(document.uri), range: c2p.asRange(range) };
  }

  /** `workspace/executeCommand`; the server applies its edit with `workspace/applyEdit`. Failures are shown. */
  async executeCommand(command: string, args: unknown[], title: string): Promise<void> {
    const client = this.client;
    if (client === undefined || !client.isRunning()) {
      void vscode.window.showWarningMessage('dg-lsp: the server is not running (run "dg-lsp: Restart server")');
      return;
    }
    try {
      await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: `dg-lsp: ${title}` },
        () => client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args }));
    } catch (error) {
      void vscode.window.showErrorMessage(`dg-lsp: ${title} failed: ${reason(error)}`);
    }
  }

  showLog(): void {
    this.output.show(true);
  }

  dispose(): void {
    void this.stop();
  }
}
