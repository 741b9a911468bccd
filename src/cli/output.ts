// What the commands print: a result as JSON (--json) or as text for people, and the text tables.

/** Prints a result: as JSON with --json (the control answer as is), else the human text. */
export function resultPrinter(json: boolean): (value: unknown, human: () => string) => void {
  return (value, human) => {
    process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : human());
  };
}

/** Columns padded to their widest cell, two spaces apart; the last column is not padded. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}
