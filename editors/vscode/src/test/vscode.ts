// A small stand-in for the `vscode` module: what the extension calls, plus the classes that
// vscode-languageclient extends when it loads. Calls are recorded in `mock` for the tests to read.

export class Disposable {
  constructor(private readonly callOnDispose: () => void = () => {}) {}
  static from(...items: { dispose(): unknown }[]): Disposable {
    return new Disposable(() => items.forEach((item) => item.dispose()));
  }
  dispose(): void {
    this.callOnDispose();
  }
}

// Classes vscode-languageclient subclasses at load time.
export class CompletionItem {}
export class CodeLens {}
export class DocumentLink {}
export class CodeAction {}
export class Diagnostic {}
export class CallHierarchyItem {}
export class TypeHierarchyItem {}
export class SymbolInformation {}
export class InlayHint {}
export class CancellationError extends Error {}

export enum StatusBarAlignment { Left = 1, Right = 2 }
export enum ProgressLocation { SourceControl = 1, Window = 10, Notification = 15 }

export class ThemeColor {
  constructor(public readonly id: string) {}
}

export class Position {
  constructor(public readonly line: number, public readonly character: number) {}
}

export class Range {
  constructor(public readonly start: Position, public readonly end: Position) {}
  get isEmpty(): boolean {
    return this.start.line === this.end.line && this.start.character === this.end.character;
  }
}

export class Selection extends Range {}

export class Uri {
  private constructor(private readonly value: string) {}
  static parse(value: string): Uri {
    return new Uri(value);
  }
  toString(): string {
    return this.value;
  }
}

export class FakeStatusBarItem {
  text = '';
  tooltip: unknown = '';
  name?: string;
  command?: string;
  backgroundColor?: ThemeColor;
  visible = false;
  disposed = false;
  constructor(public readonly id: string, public readonly alignment: StatusBarAlignment) {}
  show(): void {
    this.visible = true;
  }
  hide(): void {
    this.visible = false;
  }
  dispose(): void {
    this.disposed = true;
  }
}

type Listener<T> = (event: T) => unknown;
type Inspected = { globalValue?: unknown; workspaceValue?: unknown; workspaceFolderValue?: unknown };

/** What the tests read and steer. */
export const mock = {
  messages: [] as { level: 'error' | 'warning' | 'info'; text: string }[],
  statusItems: [] as FakeStatusBarItem[],
  commands: new Map<string, (...args: unknown[]) => unknown>(),
  /** Settings the user set, by full key (`dg-lsp.model.path`): global and workspace values. */
  settings: new Map<string, Inspected>(),
  configListeners: [] as Listener<{ affectsConfiguration(section: string): boolean }>[],
  logShown: 0,
  reset(): void {
    this.messages.length = 0;
    this.statusItems.length = 0;
    this.commands.clear();
    this.settings.clear();
    this.configListeners.length = 0;
    this.logShown = 0;
    window.activeTextEditor = undefined;
  },
  /** Set `key` (e.g. `dg-lsp.model.path`) and fire onDidChangeConfiguration the way VS Code does. */
  setSetting(key: string, value: unknown, scope: 'globalValue' | 'workspaceValue' = 'globalValue'): void {
    this.settings.set(key, { ...this.settings.get(key), [scope]: value });
    const event = { affectsConfiguration: (section: string) => key === section || key.startsWith(`${section}.`) };
    this.configListeners.forEach((listener) => listener(event));
  },
};

function say(level: 'error' | 'warning' | 'info') {
  return async (text: string): Promise<undefined> => {
    mock.messages.push({ level, text });
    return undefined;
  };
}

export const window = {
  activeTextEditor: undefined as unknown,
  createStatusBarItem(id: string, alignment: StatusBarAlignment): FakeStatusBarItem {
    const item = new FakeStatusBarItem(id, alignment);
    mock.statusItems.push(item);
    return item;
  },
  createOutputChannel(name: string) {
    const noop = () => {};
    return { name, append: noop, appendLine: noop, trace: noop, debug: noop, info: noop, warn: noop, error: noop,
      clear: noop, hide: noop, dispose: noop, show: () => { mock.logShown += 1; } };
  },
  showErrorMessage: say('error'),
  showWarningMessage: say('warning'),
  showInformationMessage: say('info'),
  withProgress<T>(_options: unknown, task: (progress: { report(value: unknown): void }) => Promise<T>): Promise<T> {
    return task({ report: () => {} });
  },
};

export const commands = {
  registerCommand(id: string, handler: (...args: unknown[]) => unknown): Disposable {
    if (mock.commands.has(id)) {
      throw new Error(`command '${id}' already exists`);
    }
    mock.commands.set(id, handler);
    return new Disposable(() => mock.commands.delete(id));
  },
  async executeCommand(id: string, ...args: unknown[]): Promise<unknown> {
    const handler = mock.commands.get(id);
    if (handler === undefined) {
      throw new Error(`command '${id}' not found`);
    }
    return handler(...args);
  },
};

export const workspace = {
  getConfiguration(section: string) {
    const inspect = (key: string) => mock.settings.get(`${section}.${key}`) ?? {};
    return {
      inspect,
      get<T>(key: string, fallback?: T): T | undefined {
        const seen = inspect(key);
        return (seen.workspaceFolderValue ?? seen.workspaceValue ?? seen.globalValue ?? fallback) as T | undefined;
      },
    };
  },
  onDidChangeConfiguration(listener: Listener<{ affectsConfiguration(section: string): boolean }>): Disposable {
    mock.configListeners.push(listener);
    return new Disposable(() => mock.configListeners.splice(mock.configListeners.indexOf(listener), 1));
  },
};
