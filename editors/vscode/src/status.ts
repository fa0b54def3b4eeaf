// The status bar item: model loading progress, then model, device and the latest latency; while a long
// completion runs, how many lines it has so far. `describe` is pure (state in, words out); `StatusBar` only
// writes its result onto the item.
import * as vscode from 'vscode';

/** The `dg/status` notification. */
export interface ServerStatus {
  model?: string | null;
  device?: string | null;
  kernels?: string | null;
  state?: string | null; // loading | ready | error
  lastLatencyMs?: number | null;
}

/** Work-done progress of the model load or a long completion (`$/progress` begin / report / end). */
export interface LoadProgress {
  kind: 'begin' | 'report' | 'end';
  title?: string;
  message?: string;
  percentage?: number;
}

export interface StatusView {
  text: string;
  tooltip: string;
  error: boolean;
}

/** The title of a long completion's progress; its report messages are the text so far. */
export const COMPLETING = 'dg-lsp: completing';

/** Lines of the text so far (a trailing line break starts no line yet). */
export function linesSoFar(text: string | undefined): number {
  return text ? text.replace(/\r?\n$/, '').split(/\r?\n/).length : 0;
}

function shortModel(model: string): string {
  const parts = model.split(/[\\/]/).filter((p) => p !== '');
  return parts.length > 0 ? parts[parts.length - 1] : model;
}

export function describe(status: ServerStatus | undefined, progress?: LoadProgress, stopped?: string): StatusView {
  if (stopped !== undefined) {
    return { text: '$(circle-slash) dg', tooltip: `dg-lsp: ${stopped} (dg-lsp: Restart server)`, error: true };
  }
  if (progress !== undefined && progress.kind !== 'end' && progress.title === COMPLETING) {
    const lines = linesSoFar(progress.message);
    const count = lines === 0 ? '' : ` ${lines} ${lines === 1 ? 'line' : 'lines'}`;
    return { text: `$(sync~spin) dg-lsp: completing…${count}`,
      tooltip: progress.message ? `${COMPLETING}…\n${progress.message}` : `${COMPLETING}…`, error: false };
  }
  if (progress !== undefined && progress.kind !== 'end') {
    const pct = progress.percentage !== undefined ? ` ${Math.round(progress.percentage)}%` : '';
    const words = [progress.title ?? 'dg-lsp: loading model', progress.message].filter(Boolean).join(': ');
    return { text: `$(sync~spin) dg${pct}`, tooltip: words, error: false };
  }
  if (status === undefined) {
    return { text: '$(sync~spin) dg', tooltip: 'dg-lsp: starting the server', error: false };
  }
  const model = status.model ? shortModel(status.model) : 'model';
  const facts = [`model ${status.model ?? '?'}`, `device ${status.device ?? '?'}`, `kernels ${status.kernels ?? '?'}`];
  switch (status.state) {
    case 'loading':
      return { text: '$(sync~spin) dg', tooltip: 'dg-lsp: loading the model', error: false };
    case 'error':
      return { text: '$(error) dg', tooltip: 'dg-lsp: the model failed to load (see the server log)', error: true };
    default: {
      const latency = typeof status.lastLatencyMs === 'number' ? ` · ${Math.round(status.lastLatencyMs)} ms` : '';
      const last = latency ? [`last completion ${Math.round(status.lastLatencyMs as number)} ms`] : [];
      return {
        text: `$(sparkle) dg ${model} · ${status.device ?? '?'}${latency}`,
        tooltip: ['dg-lsp ready', ...facts, ...last].join('\n'),
        error: false,
      };
    }
  }
}

export class StatusBar implements vscode.Disposable {
  private status?: ServerStatus;
  // per token, the latest-updated last: a completion superseded by the next one may end after it began
  private readonly progress = new Map<string | number, LoadProgress>();
  private stoppedReason?: string;

  constructor(private readonly item: vscode.StatusBarItem) {
    item.name = 'dg-lsp';
    item.command = 'dg-lsp.showLog';
    this.render();
    item.show();
  }

  /** A new server process: forget what the previous one said. */
  starting(): void {
    this.status = this.stoppedReason = undefined;
    this.progress.clear();
    this.render();
  }

  update(status: ServerStatus): void {
    this.status = status;
    this.stoppedReason = undefined;
    this.render();
  }

  onProgress(progress: LoadProgress, token: string | number = ''): void {
    const before = this.progress.get(token);
    this.progress.delete(token);
    if (progress.kind !== 'end') {
      this.progress.set(token, { ...before, ...progress });
    }
    this.render();
  }

  stopped(reason: string): void {
    this.progress.clear();
    this.stoppedReason = reason;
    this.render();
  }

  private render(): void {
    const view = describe(this.status, [...this.progress.values()].pop(), this.stoppedReason);
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
