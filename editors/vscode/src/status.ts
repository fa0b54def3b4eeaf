// The status bar item: model loading progress, then model, device and the latest latency. `describe` is
// pure (state in, words out); `StatusBar` only writes its result onto the item.
import * as vscode from 'vscode';

/** The `dg/status` notification. */
export interface ServerStatus {
  model?: string | null;
  device?: string | null;
  kernels?: string | null;
  state?: string | null; // loading | ready | error
  lastLatencyMs?: number | null;
}

/** Work-done progress of the model load (`$/progress` begin / report / end). */
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

function shortModel(model: string): string {
  const parts = model.split(/[\\/]/).filter((p) => p !== '');
  return parts.length > 0 ? parts[parts.length - 1] : model;
}

export function describe(status: ServerStatus | undefined, progress?: LoadProgress, stopped?: string): StatusView {
  if (stopped !== undefined) {
    return { text: '$(circle-slash) dg', tooltip: `dg-lsp: ${stopped} (dg-lsp: Restart server)`, error: true };
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
  private progress?: LoadProgress;
  private stoppedReason?: string;

  constructor(private readonly item: vscode.StatusBarItem) {
    item.name = 'dg-lsp';
    item.command = 'dg-lsp.showLog';
    this.render();
    item.show();
  }

  /** A new server process: forget what the previous one said. */
  starting(): void {
    this.status = this.progress = this.stoppedReason = undefined;
    this.render();
  }

  update(status: ServerStatus): void {
    this.status = status;
    this.stoppedReason = undefined;
    this.render();
  }

  onProgress(progress: LoadProgress): void {
    this.progress = progress.kind === 'end' ? undefined : { ...this.progress, ...progress };
    this.render();
  }

  stopped(reason: string): void {
    this.progress = undefined;
    this.stoppedReason = reason;
    this.render();
  }

  private render(): void {
    const view = describe(this.status, this.progress, this.stoppedReason);
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
