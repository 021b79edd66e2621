// The firewall tools this process ran, so `nft monitor` can tell our own commits from anybody
// else's: it names the process of each generation ("# new generation 7 by process 4242 (nft)").
// The pid it names is the host's. Once one of our tools' pids is named, pids are trusted alone.
// Until then (in a container, with its own PID namespace, they never are), a commit is also ours
// when a writing tool of ours of that name was running then, each run claiming one commit: our
// tools commit once per run (one transaction), so a second commit in that window is somebody else's.

/** A commit's line may come this long after its tool exited. */
const LINE_DELAY_MS = 250;
/** Tools that ended longer ago than this are forgotten. */
const FORGET_AFTER_MS = 5_000;

interface ToolRun {
  pid: number | undefined;
  /** The kernel's name for it: the program's file name, cut to 15 characters. */
  comm: string;
  /** Whether it may commit (a listing never does). */
  writes: boolean;
  startedAt: number;
  endedAt: number | null;
  /** A commit was taken for this run's by its name. */
  claimed: boolean;
}

const runs = new Set<ToolRun>();
/** Whether the kernel names our tools by the pids we know. */
let pidsVisible = false;

/** The program a command line runs (nsenter … -- prog args: prog), and its arguments. */
function programOf(file: string, args: readonly string[]): { program: string; rest: string[] } {
  if (file === "nsenter" && args.includes("--")) {
    const at = args.indexOf("--");
    return { program: args[at + 1] ?? "", rest: args.slice(at + 2) };
  }
  return { program: file, rest: [...args] };
}

/** The kernel's name of what a command line runs. */
export function commOf(file: string, args: readonly string[]): string {
  const { program } = programOf(file, args);
  return program.slice(program.lastIndexOf("/") + 1).slice(0, 15);
}

/** Whether a command line only reads netfilter (nft list …, iptables-save, iptables -S/-L). */
function readsOnly(file: string, args: readonly string[]): boolean {
  const { program, rest } = programOf(file, args);
  const name = program.slice(program.lastIndexOf("/") + 1);
  if (name === "nft") return rest.includes("list") || rest.includes("monitor");
  if (/tables(-nft|-legacy)?-save$/.test(name)) return true;
  if (/tables(-nft|-legacy)?$/.test(name)) return rest.some((a) => /^-(S|L|C)$/.test(a));
  return false;
}

/** Notes a tool started; call the returned function when it ends. */
export function noteToolRun(
  pid: number | undefined,
  file: string,
  args: readonly string[],
  now = Date.now(),
): () => void {
  const run: ToolRun = {
    pid,
    comm: commOf(file, args),
    writes: !readsOnly(file, args),
    startedAt: now,
    endedAt: null,
    claimed: false,
  };
  runs.add(run);
  return () => {
    run.endedAt = Date.now();
  };
}

/** Whether the commit a monitor line names, seen at `at`, was made by one of our tools. */
export function isOwnCommit(pid: number, comm: string, at = Date.now()): boolean {
  for (const run of runs)
    if (run.endedAt !== null && at - run.endedAt > FORGET_AFTER_MS) runs.delete(run);
  for (const run of runs)
    if (run.pid === pid) {
      pidsVisible = true;
      return true;
    }
  if (pidsVisible) return false;
  for (const run of runs) {
    if (!run.writes || run.claimed || run.comm !== comm) continue;
    if (run.startedAt <= at && (run.endedAt === null || at - run.endedAt <= LINE_DELAY_MS)) {
      run.claimed = true;
      return true;
    }
  }
  return false;
}

/** For tests: forget every run, and that pids were ever seen. */
export function resetOwnTools(): void {
  runs.clear();
  pidsVisible = false;
}
