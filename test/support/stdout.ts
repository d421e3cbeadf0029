// What the process writes to standard output (the server's log lines) while a test step runs.

/** Runs `run` with `written()` giving what was written to standard output since it began; the output still goes through. */
export async function withStdout<T>(run: (written: () => string) => Promise<T>): Promise<T> {
  let text = '';
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    text += String(chunk);
    return (write as (...args: unknown[]) => boolean).call(process.stdout, chunk, ...rest);
  }) as typeof process.stdout.write;
  try {
    return await run(() => text);
  } finally {
    process.stdout.write = write;
  }
}
