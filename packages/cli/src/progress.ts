/**
 * Training progress on stderr.
 *
 * On a terminal: one line redrawn in place (carriage return + clear line), fitted to the
 * terminal width, at most 10 redraws a second:
 *   `train  [#######.......]  step 120/500  loss 2.3141  1,234 tok/s  ETA 3m12s`
 * Elsewhere (CI logs, pipes, files): a plain line every 5% of progress or every 10 s, whichever
 * comes first, plus the final one; never a carriage return or escape sequence.
 */
import { formatNumber } from './table.js';

export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** Total steps; a non-positive or non-finite total shows no bar, percentage or ETA. */
  total: number;
  /** Default `process.stderr`. */
  stream?: ProgressStream;
  /** Shown before the phase, e.g. a run name. */
  label?: string;
  /** Force terminal (true) or plain (false) output. Default: `stream.isTTY`, and not when TERM=dumb. */
  tty?: boolean;
  /** Clock in milliseconds (for tests). Default `performance.now()`. */
  now?: () => number;
  /** Terminal redraw interval. Default 100 ms (≤ 10 redraws/s). */
  minRedrawMs?: number;
  /** Plain output: a line each time progress crosses a multiple of this fraction. Default 0.05. */
  plainEveryFraction?: number;
  /** Plain output: a line at least this often while updates arrive. Default 10 000 ms. */
  plainEveryMs?: number;
  /** Time constant of the rate smoothing behind the ETA, in seconds. Default 10. */
  smoothingSeconds?: number;
}

export interface ProgressUpdate {
  step: number;
  loss?: number;
  tokensPerSecond?: number;
  phase?: string;
  /** Further `key value` pairs appended to the line. */
  extra?: Readonly<Record<string, string | number>>;
}

/** Everything a progress line shows. */
export interface ProgressState extends ProgressUpdate {
  total: number;
  label?: string;
  /** Seconds left; undefined or non-finite → `--`. */
  etaSeconds?: number;
}

/** `45s`, `3m12s`, `1h02m`, `2d03h`; `--` for negative or non-finite input. Rounds to whole seconds. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  const m = Math.round(s / 60);
  if (m < 24 * 60) return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
  const h = Math.round(s / 3600);
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

/**
 * A rate with its unit: `1,234 tok/s` below a million (one decimal below 10: `3.5 tok/s`),
 * then `1.23M tok/s`, `4.56G tok/s`; `-- tok/s` when negative or non-finite.
 */
export function formatRate(perSecond: number, unit = 'tok/s'): string {
  if (!Number.isFinite(perSecond) || perSecond < 0) return `-- ${unit}`;
  if (perSecond < 10) return `${perSecond.toFixed(1)} ${unit}`;
  if (perSecond < 999_999.5) return `${formatNumber(perSecond, 0)} ${unit}`;
  if (perSecond < 999_995_000) return `${(perSecond / 1e6).toFixed(2)}M ${unit}`;
  return `${(perSecond / 1e9).toFixed(2)}G ${unit}`;
}

/** `[#####.....]` with `width` cells inside the brackets; the fraction is clamped to [0, 1] and rounded down. */
export function renderBar(fraction: number, width: number): string {
  const w = Math.max(0, Math.floor(width));
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const filled = Math.min(w, Math.floor(f * w + 1e-9));
  return `[${'#'.repeat(filled)}${'.'.repeat(w - filled)}]`;
}

/** Loss with 4 decimals (`2.3141`); `nan` / `inf` when not finite. */
export function formatLoss(loss: number): string {
  if (Number.isNaN(loss)) return 'nan';
  if (!Number.isFinite(loss)) return loss > 0 ? 'inf' : '-inf';
  return Math.abs(loss) >= 1e5 ? loss.toExponential(3) : loss.toFixed(4);
}

function formatExtra(v: string | number): string {
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v) || Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

function hasTotal(total: number): boolean {
  return Number.isFinite(total) && total > 0;
}

function parts(state: ProgressState): { prefix: string; fields: string[] } {
  const prefix = [state.label, state.phase].filter((s) => s !== undefined && s !== '').join(' ');
  const fields = [hasTotal(state.total) ? `step ${state.step}/${state.total}` : `step ${state.step}`];
  if (state.loss !== undefined) fields.push(`loss ${formatLoss(state.loss)}`);
  if (state.tokensPerSecond !== undefined) fields.push(formatRate(state.tokensPerSecond));
  if (hasTotal(state.total)) fields.push(`ETA ${formatDuration(state.etaSeconds ?? NaN)}`);
  for (const [k, v] of Object.entries(state.extra ?? {})) fields.push(`${k} ${formatExtra(v)}`);
  return { prefix, fields };
}

/**
 * The terminal line, at most `columns - 1` characters (the last column is left free so the
 * terminal never wraps): the bar shrinks from 30 cells down to 10, then goes, then the line is cut.
 */
export function formatTtyLine(state: ProgressState, columns = 80): string {
  const { prefix, fields } = parts(state);
  const max = Math.max(10, columns - 1);
  const head = prefix ? [prefix] : [];
  const text = [...head, ...fields].join('  ');
  if (hasTotal(state.total)) {
    const room = max - text.length - 2 /* gap */ - 2; /* brackets */
    const barWidth = Math.min(30, room);
    if (barWidth >= 10) {
      const bar = renderBar(state.step / state.total, barWidth);
      return [...head, bar, ...fields].join('  ');
    }
  }
  return text.length <= max ? text : text.slice(0, max);
}

/** The plain (non-terminal) line: `train  step 120/500 (24%)  loss 2.3141  1,234 tok/s  ETA 3m12s`. */
export function formatPlainLine(state: ProgressState): string {
  const { prefix, fields } = parts(state);
  if (hasTotal(state.total)) fields[0] += ` (${Math.floor((100 * Math.min(state.step, state.total)) / state.total)}%)`;
  return [...(prefix ? [prefix] : []), ...fields].join('  ');
}

/**
 * Steps per second, smoothed with an exponential moving average whose weight follows the time
 * between observations (time constant `tauSeconds`), so irregular update intervals do not bias it.
 */
export class RateSmoother {
  private lastStep: number | undefined;
  private lastTime: number | undefined;
  private value: number | undefined;

  constructor(private readonly tauSeconds = 10) {}

  /** Record that `step` was reached at `timeSeconds`. A step going backwards restarts the estimate. */
  observe(step: number, timeSeconds: number): void {
    if (this.lastStep === undefined || this.lastTime === undefined || step < this.lastStep) {
      if (this.lastStep !== undefined) this.value = undefined;
      this.lastStep = step;
      this.lastTime = timeSeconds;
      return;
    }
    const dt = timeSeconds - this.lastTime;
    const ds = step - this.lastStep;
    if (dt <= 0 || ds <= 0) return;
    const instant = ds / dt;
    const alpha = this.value === undefined ? 1 : 1 - Math.exp(-dt / this.tauSeconds);
    this.value = this.value === undefined ? instant : this.value + alpha * (instant - this.value);
    this.lastStep = step;
    this.lastTime = timeSeconds;
  }

  /** Steps per second, or undefined before two observations. */
  get rate(): number | undefined {
    return this.value;
  }

  /** Seconds to go for `remainingSteps` at the smoothed rate (undefined when unknown). */
  eta(remainingSteps: number): number | undefined {
    if (this.value === undefined || this.value <= 0) return undefined;
    return Math.max(0, remainingSteps) / this.value;
  }
}

export class Progress {
  private readonly stream: ProgressStream;
  private readonly tty: boolean;
  private readonly now: () => number;
  private readonly total: number;
  private readonly label: string | undefined;
  private readonly minRedrawMs: number;
  private readonly plainEveryFraction: number;
  private readonly plainEveryMs: number;
  private readonly smoother: RateSmoother;

  private state: ProgressState | undefined;
  /** A bar is on screen (TTY) and must be cleared before other output. */
  private drawn = false;
  private lastDrawMs = -Infinity;
  private lastPlainMs: number;
  private lastPlainBucket = 0;
  private lastPlainStep: number | undefined;
  private finished = false;

  constructor(options: ProgressOptions) {
    this.stream = options.stream ?? process.stderr;
    this.tty = options.tty ?? (this.stream.isTTY === true && process.env.TERM !== 'dumb');
    this.now = options.now ?? (() => performance.now());
    this.total = options.total;
    this.label = options.label;
    this.minRedrawMs = options.minRedrawMs ?? 100;
    this.plainEveryFraction = options.plainEveryFraction ?? 0.05;
    this.plainEveryMs = options.plainEveryMs ?? 10_000;
    this.smoother = new RateSmoother(options.smoothingSeconds ?? 10);
    this.lastPlainMs = this.now();
  }

  /** Record progress; draws when due. Ignored after {@link done}. */
  update(update: ProgressUpdate): void {
    if (this.finished) return;
    const t = this.now();
    this.smoother.observe(update.step, t / 1000);
    const phaseChanged = this.state !== undefined && this.state.phase !== update.phase;
    this.state = {
      ...update,
      total: this.total,
      label: this.label,
      etaSeconds: hasTotal(this.total) ? this.smoother.eta(this.total - update.step) : undefined,
    };
    if (this.tty) {
      if (phaseChanged || update.step >= this.total || t - this.lastDrawMs >= this.minRedrawMs) this.draw(t);
      return;
    }
    const bucket = hasTotal(this.total)
      ? Math.floor((update.step / this.total) / this.plainEveryFraction + 1e-9)
      : 0;
    if (phaseChanged || bucket > this.lastPlainBucket || t - this.lastPlainMs >= this.plainEveryMs) {
      this.printPlain(t, bucket);
    }
  }

  /** Print a line of its own; on a terminal it goes above the bar, which is redrawn under it. */
  log(line: string): void {
    const text = line.endsWith('\n') ? line : `${line}\n`;
    if (this.tty && this.drawn) {
      this.stream.write(`\r\x1b[2K${text}`);
      this.drawn = false;
      if (!this.finished) this.draw(this.now());
    } else {
      this.stream.write(text);
    }
  }

  /** Show the final state and end the line. Later calls do nothing. */
  done(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.state === undefined) return;
    if (this.tty) {
      this.draw(this.now());
      this.stream.write('\n');
      this.drawn = false;
    } else if (this.lastPlainStep !== this.state.step) {
      this.printPlain(this.now(), this.lastPlainBucket);
    }
  }

  private draw(t: number): void {
    if (this.state === undefined) return;
    const columns = this.stream.columns && this.stream.columns > 0 ? this.stream.columns : 80;
    this.stream.write(`\r\x1b[2K${formatTtyLine(this.state, columns)}`);
    this.drawn = true;
    this.lastDrawMs = t;
  }

  private printPlain(t: number, bucket: number): void {
    if (this.state === undefined) return;
    this.stream.write(`${formatPlainLine(this.state)}\n`);
    this.lastPlainMs = t;
    this.lastPlainBucket = Math.max(this.lastPlainBucket, bucket);
    this.lastPlainStep = this.state.step;
  }
}
