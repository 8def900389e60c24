// Newline-delimited JSON framing (PROTOCOL.md §1): one message per line,
// UTF-8, a trailing `\r` tolerated, a byte-order mark at the very start
// tolerated, empty lines skipped, a line longer than the limit skipped up
// to its newline and reported, a partial line at end of input reported.
//
// Chunks are kept as Buffers until a newline arrives, so a huge line split
// over thousands of reads costs one concatenation, not one per read.

/** What the splitter found that is not a line. */
export type FramingProblem =
  | { kind: "too_long"; bytes: number; limit: number }
  | { kind: "not_utf8"; excerpt: string }
  | { kind: "partial_line_at_eof"; bytes: number };

const NEWLINE = 0x0a;
const CR = 0x0d;
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  /** Bytes of a too-long line skipped so far (null: not skipping). */
  private skipped: number | null = null;
  private atStart = true;
  /** The rest of a chunk not split yet because `blocked()` said stop. */
  private held: Buffer | null = null;
  private ended = false;

  /**
   * `blocked`: asked after every line; while it says true the splitter
   * stops, keeping the rest of the chunk until {@link resume}.
   */
  constructor(
    private readonly maxLineBytes: number,
    private readonly onLine: (line: string) => void,
    private readonly onProblem: (problem: FramingProblem) => void,
    private readonly blocked: () => boolean = () => false,
  ) {}

  /** Whether part of a chunk is held back (see `blocked`). */
  get holding(): boolean {
    return this.held !== null;
  }

  /** Feeds one chunk; calls `onLine` for every complete line in it, until blocked. */
  push(chunk: Buffer): void {
    if (this.held) {
      this.held = Buffer.concat([this.held, chunk]);
      return;
    }
    this.split(chunk);
  }

  /** Goes on with a held chunk; returns whether nothing is held any more. */
  resume(): boolean {
    const held = this.held;
    if (held) {
      this.held = null;
      this.split(held);
    }
    if (!this.held && this.ended) this.finish();
    return this.held === null;
  }

  /** End of input: a partial line left over is reported, not used (after what is held). */
  end(): void {
    this.ended = true;
    if (!this.held) this.finish();
  }

  private split(chunk: Buffer): void {
    let start = 0;
    while (start < chunk.length) {
      const newline = chunk.indexOf(NEWLINE, start);
      if (newline === -1) {
        this.keep(chunk.subarray(start));
        return;
      }
      if (this.parts.length === 0 && this.skipped === null) {
        // The common case: the whole line is in this chunk.
        this.line(chunk, start, newline);
      } else {
        this.keep(chunk.subarray(start, newline));
        this.finishLine();
      }
      start = newline + 1;
      if (start < chunk.length && this.blocked()) {
        this.held = chunk.subarray(start);
        return;
      }
    }
  }

  /** A piece of a line whose end is in a later chunk. */
  private keep(piece: Buffer): void {
    if (this.skipped !== null) {
      this.skipped += piece.length;
    } else if (this.size + piece.length > this.maxLineBytes + 1) {
      // Over the limit (one byte of room for a `\r`; the exact check is
      // made on the finished line): skipped up to its newline.
      this.skipped = this.size + piece.length;
      this.parts = [];
      this.size = 0;
    } else if (piece.length > 0) {
      this.parts.push(piece);
      this.size += piece.length;
    }
  }

  private finish(): void {
    if (this.skipped !== null) {
      this.onProblem({ kind: "too_long", bytes: this.skipped, limit: this.maxLineBytes });
    } else if (this.size > 0) {
      this.onProblem({ kind: "partial_line_at_eof", bytes: this.size });
    }
    this.parts = [];
    this.size = 0;
    this.skipped = null;
  }

  private finishLine(): void {
    if (this.skipped !== null) {
      const bytes = this.skipped;
      this.skipped = null;
      this.onProblem({ kind: "too_long", bytes, limit: this.maxLineBytes });
      return;
    }
    const line = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    this.line(line, 0, line.length);
  }

  /** The line `bytes[start..end)` (without its newline). */
  private line(bytes: Buffer, start: number, end: number): void {
    if (this.atStart) {
      // A byte-order mark is tolerated at the very start of the stream only.
      this.atStart = false;
      if (end - start >= 3 && bytes[start] === 0xef && bytes[start + 1] === 0xbb && bytes[start + 2] === 0xbf) start += 3;
    }
    if (end > start && bytes[end - 1] === CR) end--;
    if (end - start > this.maxLineBytes) {
      this.onProblem({ kind: "too_long", bytes: end - start, limit: this.maxLineBytes });
      return;
    }
    if (end === start) return;
    // The lenient decoder is fast; only a line that decodes with U+FFFD in
    // it (rare, and possibly legitimate) is checked by the strict one.
    const text = bytes.toString("utf8", start, end);
    if (text.includes("\ufffd")) {
      try {
        utf8.decode(bytes.subarray(start, end));
      } catch {
        this.onProblem({ kind: "not_utf8", excerpt: excerpt(text) });
        return;
      }
    }
    if (text.trim() === "") return;
    this.onLine(text);
  }
}

/** The start of a text, for error messages (control characters escaped). */
export function excerpt(text: string, max = 200): string {
  const cut = text.length > max ? `${text.slice(0, max)}… (${text.length} characters)` : text;
  return JSON.stringify(cut);
}
