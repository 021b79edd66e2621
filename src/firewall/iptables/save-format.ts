// Parsing of `iptables-save` output. Only the filter table matters to TrafficJam.

/** The filter table as the kernel has it: chain name → its rules, as `-A CHAIN …` lines. */
export interface FilterTable {
  chains: Map<string, string[]>;
}

export function emptyFilterTable(): FilterTable {
  return { chains: new Map() };
}

/** Extracts the `*filter` section of an iptables-save dump; absent section → no chains. */
export function parseFilterTable(dump: string): FilterTable {
  const table = emptyFilterTable();
  let inFilter = false;
  for (const raw of dump.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("*")) {
      inFilter = line === "*filter";
      continue;
    }
    if (!inFilter) continue;
    if (line === "COMMIT") {
      inFilter = false;
    } else if (line.startsWith(":")) {
      const name = line.slice(1).split(" ")[0] ?? "";
      if (!table.chains.has(name)) table.chains.set(name, []);
    } else if (line.startsWith("-A ")) {
      const chain = line.split(" ")[1] ?? "";
      const rules = table.chains.get(chain) ?? [];
      rules.push(normalizeRule(line));
      table.chains.set(chain, rules);
    }
  }
  return table;
}

/** Splits a rule line into arguments, honouring double quotes as iptables-save writes them. */
export function splitArgs(line: string): string[] {
  const args: string[] = [];
  const pattern = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const match of line.matchAll(pattern)) {
    args.push(match[1] !== undefined ? match[1].replace(/\\(.)/g, "$1") : (match[2] ?? ""));
  }
  return args;
}

/** One spelling per rule, so rendered rules and read-back rules compare as strings. */
export function normalizeRule(line: string): string {
  return splitArgs(line)
    .map((arg) =>
      /^[A-Za-z0-9_.,:/!+=-]+$/.test(arg) ? arg : `"${arg.replace(/(["\\])/g, "\\$1")}"`,
    )
    .join(" ");
}
