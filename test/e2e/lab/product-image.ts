// The product's own image, built from the repository's Dockerfile inside a lab engine, on the
// locally made Node base (no registry here) and with package downloads through the build proxy.
import { REPO_ROOT } from "./paths.js";
import { DOCKER_BIN } from "./docker-cli.js";
import { runOk } from "./exec.js";
import type { Lab } from "./lab.js";
import { NODE_BASE_IMAGE, loadNodeBase } from "./node-base.js";
import { startBuildProxy } from "./build-proxy.js";

export const PRODUCT_IMAGE = "trafficjam:e2e";

/** Builds the Dockerfile at the repository root as PRODUCT_IMAGE; returns the build output. */
export async function buildProductImage(lab: Lab, tag = PRODUCT_IMAGE): Promise<string> {
  await loadNodeBase(lab.dockerHost);
  const proxy = await startBuildProxy(lab);
  try {
    return await runOk(
      DOCKER_BIN,
      [
        ...["-H", lab.dockerHost, "build", "--pull=false", "-t", tag],
        ...["--build-arg", `BASE=${NODE_BASE_IMAGE}`],
        ...["--build-arg", `http_proxy=${proxy.url}`, "--build-arg", `https_proxy=${proxy.url}`],
        REPO_ROOT,
      ],
      {
        timeoutMs: 600_000,
        // the classic builder of dockerd 20.10; nothing that could point at another engine
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: "/root", DOCKER_BUILDKIT: "0" },
      },
    );
  } catch (e) {
    throw new Error(
      `${(e as Error).message}\nhosts asked of the proxy: ${proxy.requests.join(", ")}`,
      {
        cause: e,
      },
    );
  } finally {
    await proxy.close();
  }
}
