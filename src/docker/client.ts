// The Engine API client. dockerode reads DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
import Docker from "dockerode";

export type { Docker };

export function createDockerClient(): Docker {
  return new Docker();
}

export function describeDockerEndpoint(): string {
  return process.env.DOCKER_HOST || "unix:///var/run/docker.sock";
}
