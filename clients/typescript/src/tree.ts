// Killing an agent's whole process tree, the way deputy-host does
// (PROTOCOL.md §2, "A host that wants the agent gone quickly…").
//
// The agent is spawned with `detached: true`, so it calls `setsid()`: it
// leads a session and a process group whose ids equal its pid. On Linux the
// tree is found in /proc: every descendant by parent links (a tool that
// double-forked into a session of its own is still a descendant of
// `deputy agent`, a child subreaper), every process of the agent's session
// and of its group. Each is frozen with SIGSTOP, over fresh reads of /proc
// until nothing new shows up (a stopped process cannot fork), then all get
// SIGKILL, and the group a kill(-pgid). Elsewhere only the group is killed.

import { readdirSync, readFileSync } from "node:fs";

interface ProcStat {
  pid: number;
  ppid: number;
  pgrp: number;
  session: number;
  zombie: boolean;
}

/** Parses /proc/PID/stat: the fields after the *last* `)` (the name may hold one). */
function parseStat(text: string): ProcStat | null {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return null;
  const fields = text.slice(close + 2).split(" ");
  const pid = Number(text.slice(0, open).trim());
  const [state, ppid, pgrp, session] = [fields[0], Number(fields[1]), Number(fields[2]), Number(fields[3])];
  if (!Number.isInteger(pid) || state === undefined) return null;
  return { pid, ppid, pgrp, session, zombie: state === "Z" || state === "X" };
}

/** Every process the kernel lists now; null where there is no /proc. */
function snapshot(): ProcStat[] | null {
  let names: string[];
  try {
    names = readdirSync("/proc");
  } catch {
    return null;
  }
  const procs: ProcStat[] = [];
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = parseStat(readFileSync(`/proc/${name}/stat`, "latin1"));
      if (stat) procs.push(stat);
    } catch {
      // Gone meanwhile.
    }
  }
  return procs;
}

/** The live processes of the tree of `root` (a session leader): see the module comment. */
function select(procs: ProcStat[], root: number, rootAlive: boolean): number[] {
  const found = new Set<number>();
  if (rootAlive) {
    found.add(root);
    let frontier = [root];
    while (frontier.length > 0) {
      const next: number[] = [];
      for (const p of procs) {
        if (frontier.includes(p.ppid) && !found.has(p.pid)) {
          found.add(p.pid);
          next.push(p.pid);
        }
      }
      frontier = next;
    }
  }
  for (const p of procs) {
    if (p.session === root || p.pgrp === root) found.add(p.pid);
  }
  const live = new Set(procs.filter((p) => !p.zombie).map((p) => p.pid));
  return [...found].filter((pid) => pid !== process.pid && live.has(pid));
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // ESRCH: already gone.
  }
}

const FREEZE_ROUNDS = 16;

/**
 * Freezes and kills the tree of `root`, a process started with `setsid()`.
 * `rootAlive`: whether `root` has not been reaped yet (only then are parent
 * links followed from it and the pid itself signalled, so an unrelated
 * process that reused the pid is never touched). Returns how many
 * processes were killed (the group kill not counted).
 */
export function killTree(root: number, rootAlive: boolean): number {
  const frozen: number[] = [];
  const seen = new Set<number>();
  let sawProc = false;
  for (let round = 0; round < FREEZE_ROUNDS; round++) {
    const procs = snapshot();
    if (procs === null) break;
    sawProc = true;
    const fresh = select(procs, root, rootAlive).filter((pid) => !seen.has(pid));
    if (fresh.length === 0) break;
    for (const pid of fresh) {
      seen.add(pid);
      signal(pid, "SIGSTOP");
      frozen.push(pid);
    }
  }
  for (const pid of frozen) signal(pid, "SIGKILL");
  // The group: also where /proc is missing. After the leader was reaped the
  // group id stays reserved as long as a member lives, so this reaches only
  // the agent's own group.
  if (rootAlive || !sawProc || frozen.length > 0) signal(-root, "SIGKILL");
  return frozen.length;
}
