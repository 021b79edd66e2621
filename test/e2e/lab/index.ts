// End-to-end test lab: real dockerd engines in throwaway network namespaces.
// See lab.ts (startLab / Lab), daemon.ts (TrafficJam processes), firewall.ts (rule inspection).
export {
  startLab,
  startTestLab,
  useLab,
  Lab,
  LAB_HOST,
  type LabHost,
  type Origin,
  type StartLabOptions,
  type OwnedProcess,
  type Neighbour,
} from "./lab.js";
export type { Outside, OutsideOptions } from "./outside.js";
export type { Container, RunContainerOptions, Addresses } from "./containers.js";
export type { CreateNetworkOptions, NetworkInfo } from "./networks.js";
export type { WatchResult, Listener } from "./probes.js";
export type { RunResult } from "./exec.js";
export {
  startDaemon,
  runCli,
  DaemonProcess,
  CLI_PATH,
  type CliOptions,
  type CliResult,
  type ExitStatus,
  type LogEntry,
  type LogPredicate,
} from "./daemon.js";
export {
  iptablesSave,
  iptablesRules,
  iptablesLegacyShim,
  nftRuleset,
  nftRulesetJson,
  conntrackList,
  type Family,
  type Flavour,
} from "./firewall.js";
export { TEST_IMAGE, testImageTarball, tjprobeBinary, type TestImageKind } from "./image.js";
export type { HostServer } from "./host-server.js";
export { sweepStaleLabs, isAlive, processStartTime } from "./teardown.js";
export { waitFor, sleep, withTimeout, randomId, StopWaiting } from "./util.js";
export { REPO_ROOT } from "./paths.js";
export {
  startSwarmLab,
  useSwarmLab,
  SwarmLab,
  SwarmNodeLab,
  UNDERLAY_PREFIX,
  type SwarmLabOptions,
  type OverlayNetwork,
  type SwarmTask,
} from "./swarm.js";
