import { describe, expect, it } from 'vitest';
import { formatNumber, formatTable } from '../src/table.js';

describe('formatNumber', () => {
  it('adds thousands separators and fixed decimals', () => {
    expect(formatNumber(1234567.891, 2)).toBe('1,234,567.89');
    expect(formatNumber(999.5)).toBe('1,000'); // rounding carries into a new group
    expect(formatNumber(1000)).toBe('1,000');
    expect(formatNumber(999)).toBe('999');
    expect(formatNumber(-1234.5, 1)).toBe('-1,234.5');
    expect(formatNumber(0.5, 3)).toBe('0.500');
    expect(formatNumber(12345678, 0)).toBe('12,345,678');
  });
  it('drops the sign of values that round to zero, and names non-finite values', () => {
    expect(formatNumber(-0.001, 2)).toBe('0.00');
    expect(formatNumber(-0)).toBe('0');
    expect(formatNumber(NaN, 2)).toBe('NaN');
    expect(formatNumber(Infinity)).toBe('inf');
    expect(formatNumber(-Infinity)).toBe('-inf');
  });
});

describe('formatTable', () => {
  const rows = [
    { name: 'cpu', 'tok/s': 12345.6, steps: 500 },
    { name: 'webgpu', 'tok/s': 987.25, steps: 20 },
  ];
  it('aligns columns: text left, numbers right with separators', () => {
    expect(formatTable(rows)).toBe(
      ['name     tok/s  steps', '------  ------  -----', 'cpu     12,346    500', 'webgpu     987     20'].join('\n'),
    );
  });
  it('picks decimals per column for 3 significant digits of the smallest value', () => {
    const t = formatTable([{ loss: 2.31415 }, { loss: 0.0123 }, { loss: 10 }]);
    expect(t).toBe(['   loss', '-------', ' 2.3142', ' 0.0123', '10.0000'].join('\n'));
  });
  it('honours column specs, order, headers and missing cells', () => {
    const t = formatTable([{ a: 'x', b: 1 }, { a: 'longer' }], [{ key: 'b', header: 'B!', digits: 1 }, 'a', 'c']);
    expect(t).toBe([' B!  a       c', '---  ------  -', '1.0  x', '     longer'].join('\n'));
  });
  it('keeps mixed columns left-aligned', () => {
    expect(formatTable([{ v: 1 }, { v: 'n/a' }])).toBe(['v', '---', '1', 'n/a'].join('\n'));
  });
  it('renders markdown with right-aligned numeric columns and escaped pipes', () => {
    expect(formatTable([{ name: 'a|b', n: 1500 }], undefined, { style: 'markdown' })).toBe(
      ['| name |     n |', '|------|------:|', '| a\\|b | 1,500 |'].join('\n'),
    );
  });
  it('is empty without columns', () => {
    expect(formatTable([])).toBe('');
    expect(formatTable([], ['a'])).toBe('a\n-');
  });
});
