// No fail-open corners on one host, with the iptables backend (auto, on Docker's iptables-nft).
import { adoptionSuite } from "./adoption-suite.js";

adoptionSuite({ title: "iptables, auto", labName: "adopt", env: {} });
