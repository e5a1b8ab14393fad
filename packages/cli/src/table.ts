/** Aligned monospace tables for benchmark summaries and listings. */

export type Cell = string | number | null | undefined;

export interface ColumnSpec {
  /** Row key. */
  key: string;
  /** Header text. Default: the key. */
  header?: string;
  /** Default: right when every non-empty cell of the column is a number, else left. */
  align?: 'left' | 'right';
  /** Decimals for numbers in this column. Default: 0 for integer columns, else enough for 3 significant digits of the smallest value (at most 6). */
  digits?: number;
  /** Custom cell formatting (overrides `digits`). */
  format?: (value: Cell) => string;
}

export interface TableOptions {
  /** `plain` (default): header, dashes, two-space gaps. `markdown`: a GitHub table. */
  style?: 'plain' | 'markdown';
  /**
   * Plain style only: wrap the last column's text at word boundaries so that no line is wider than
   * this (continuation lines are indented to the column). Default: no wrapping.
   */
  maxWidth?: number;
}

/** Splits `text` into lines of at most `width` characters at spaces (a longer word stays whole). */
export function wrapText(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/ +/)) {
    if (line && textWidth(line) + 1 + textWidth(word) > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  lines.push(line);
  return lines;
}

/**
 * `x` with `digits` decimals and `,` thousands separators, independent of the locale:
 * `formatNumber(1234567.891, 2)` → `1,234,567.89`. Negative zero prints as zero; NaN as `NaN`,
 * infinities as `inf` / `-inf`.
 */
export function formatNumber(x: number, digits = 0): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const d = Math.max(0, Math.min(20, Math.floor(digits)));
  if (Math.abs(x) >= 1e21) return x.toExponential(Math.min(d, 6));
  let fixed = x.toFixed(d);
  let sign = '';
  if (fixed.startsWith('-')) {
    fixed = fixed.slice(1);
    if (/[1-9]/.test(fixed)) sign = '-'; // else it rounded to zero: no sign
  }
  const dot = fixed.indexOf('.');
  const int = dot < 0 ? fixed : fixed.slice(0, dot);
  const frac = dot < 0 ? '' : fixed.slice(dot);
  return sign + int.replace(/\B(?=(\d{3})+(?!\d))/g, ',') + frac;
}

/** Decimals that show the smallest non-zero magnitude of `values` with 3 significant digits. */
function autoDigits(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.every((v) => Number.isInteger(v))) return 0;
  const nonzero = finite.filter((v) => v !== 0).map(Math.abs);
  if (nonzero.length === 0) return 0;
  const smallest = Math.min(...nonzero);
  return Math.max(0, Math.min(6, 2 - Math.floor(Math.log10(smallest))));
}

function textWidth(s: string): number {
  return [...s].length;
}

function pad(s: string, width: number, align: 'left' | 'right'): string {
  const fill = ' '.repeat(Math.max(0, width - textWidth(s)));
  return align === 'right' ? fill + s : s + fill;
}

/**
 * Format rows as an aligned table (no trailing newline). Columns default to the union of the
 * rows' keys in order of first appearance; a column may be a key or a {@link ColumnSpec}.
 * Missing cells are empty. Numbers are right-aligned with thousands separators.
 */
export function formatTable(
  rows: readonly Record<string, Cell>[],
  columns?: readonly (string | ColumnSpec)[],
  options: TableOptions = {},
): string {
  const specs: ColumnSpec[] = (columns ?? [...new Set(rows.flatMap((r) => Object.keys(r)))]).map((c) =>
    typeof c === 'string' ? { key: c } : c,
  );
  if (specs.length === 0) return '';
  const markdown = options.style === 'markdown';

  const cols = specs.map((spec) => {
    const cells = rows.map((r) => r[spec.key]);
    const present = cells.filter((c) => c !== undefined && c !== null && c !== '');
    const numeric = present.length > 0 && present.every((c) => typeof c === 'number');
    const align = spec.align ?? (numeric ? 'right' : 'left');
    const digits = spec.digits ?? autoDigits(present.filter((c): c is number => typeof c === 'number'));
    let texts = cells.map((c) => {
      if (spec.format) return spec.format(c);
      if (c === undefined || c === null) return '';
      return typeof c === 'number' ? formatNumber(c, digits) : c;
    });
    let header = spec.header ?? spec.key;
    if (markdown) {
      texts = texts.map((t) => t.replace(/\|/g, '\\|'));
      header = header.replace(/\|/g, '\\|');
    }
    texts = texts.map((t) => t.replace(/[\r\n]+/g, ' '));
    const width = Math.max(textWidth(header), ...texts.map(textWidth), markdown ? 3 : 1);
    return { header, texts, align, width };
  });

  const join = (cells: string[]): string =>
    markdown ? `| ${cells.join(' | ')} |` : cells.join('  ').trimEnd();
  const lines = [join(cols.map((c) => pad(c.header, c.width, c.align)))];
  lines.push(
    markdown
      ? `|${cols.map((c) => (c.align === 'right' ? `${'-'.repeat(c.width + 1)}:` : '-'.repeat(c.width + 2))).join('|')}|`
      : join(cols.map((c) => '-'.repeat(c.width))),
  );
  const last = cols[cols.length - 1]!;
  const indent = cols.slice(0, -1).reduce((a, c) => a + c.width + 2, 0);
  const wrapAt = !markdown && options.maxWidth ? Math.max(20, options.maxWidth - indent) : 0;
  if (wrapAt && last.width > wrapAt) {
    lines[0] = join(cols.map((c) => pad(c.header, c === last ? 0 : c.width, c.align)));
    lines[1] = join(cols.map((c) => '-'.repeat(c === last ? Math.min(c.width, wrapAt) : c.width)));
  }
  rows.forEach((_, i) => {
    if (!wrapAt || textWidth(last.texts[i]!) <= wrapAt) return lines.push(join(cols.map((c) => pad(c.texts[i]!, c.width, c.align))));
    const [first, ...rest] = wrapText(last.texts[i]!, wrapAt);
    lines.push(join(cols.map((c) => (c === last ? first! : pad(c.texts[i]!, c.width, c.align)))));
    for (const r of rest) lines.push(' '.repeat(indent) + r);
  });
  return lines.join('\n');
}
