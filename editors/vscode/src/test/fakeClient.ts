// A stand-in LanguageClient: records what the extension registers and sends, and lets a test play the
// server (notifications, progress, replies, a failed start).
import { State, StaticFeature } from 'vscode-languageclient/node';
import { Client } from '../server';
import { Settings } from '../settings';

type Handler = (...args: any[]) => unknown;
const disposable = { dispose: () => {} };

export class FakeClient {
  running = false;
  disposed = false;
  failStart?: Error;
  reply: (method: string, params: any) => unknown = () => null;
  readonly sent: { method: string; params: any }[] = [];
  readonly notifications = new Map<string, Handler>();
  readonly requests = new Map<string, Handler>();
  readonly progress = new Map<string | number, Handler>();
  readonly features: StaticFeature[] = [];
  private readonly stateListeners: Handler[] = [];

  constructor(readonly settings: Settings) {}

  async start(): Promise<void> {
    if (this.failStart) {
      throw this.failStart;
    }
    this.running = true;
    this.features.forEach((feature) => feature.initialize({}, undefined));
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    this.running = false;
    this.stateListeners.forEach((listener) => listener({ oldState: State.Running, newState: State.Stopped }));
  }

  isRunning(): boolean {
    return this.running;
  }

  onNotification(method: string, handler: Handler) {
    this.notifications.set(method, handler);
    return disposable;
  }

  onRequest(type: { method: string }, handler: Handler) {
    this.requests.set(type.method, handler);
    return disposable;
  }

  onProgress(_type: unknown, token: string | number, handler: Handler) {
    this.progress.set(token, handler);
    return { dispose: () => this.progress.delete(token) };
  }

  onDidChangeState(listener: Handler) {
    this.stateListeners.push(listener);
    return disposable;
  }

  registerFeature(feature: StaticFeature): void {
    this.features.push(feature);
  }

  async sendRequest(type: { method: string }, params: any): Promise<unknown> {
    this.sent.push({ method: type.method, params });
    return this.reply(type.method, params);
  }

  readonly code2ProtocolConverter = {
    asUri: (uri: { toString(): string }) => uri.toString(),
    asRange: (r: { start: { line: number; character: number }; end: { line: number; character: number } }) => ({
      start: { line: r.start.line, character: r.start.character },
      end: { line: r.end.line, character: r.end.character },
    }),
  };

  /** The server crashed: the client reports Stopped on its own. */
  crash(): void {
    this.running = false;
    this.stateListeners.forEach((listener) => listener({ oldState: State.Running, newState: State.Stopped }));
  }
}

/** A ClientFactory that keeps every client it made, newest last. */
export function factory(): { clients: FakeClient[]; create: (settings: Settings) => Client } {
  const clients: FakeClient[] = [];
  return {
    clients,
    create: (settings: Settings) => {
      const client = new FakeClient(settings);
      clients.push(client);
      return client as unknown as Client;
    },
  };
}
