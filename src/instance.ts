// INSTANCE_ID, read without the configuration schema: `trafficjam healthcheck` runs every few
// seconds and must not pay for loading the validator (config.ts uses this same pattern).
export const INSTANCE_ID_PATTERN = /^[A-Za-z0-9_]{1,24}$/;
export const DEFAULT_INSTANCE_ID = "DEFAULT";

export class InstanceIdError extends Error {
  constructor(readonly value: string) {
    super(
      `INSTANCE_ID=${JSON.stringify(value)}: expected 1 to 24 characters from A-Z, a-z, 0-9 and _`,
    );
    this.name = "InstanceIdError";
  }
}

export function instanceIdOf(env: Record<string, string | undefined>): string {
  const raw = env.INSTANCE_ID;
  if (raw === undefined || raw === "") return DEFAULT_INSTANCE_ID;
  if (!INSTANCE_ID_PATTERN.test(raw)) throw new InstanceIdError(raw);
  return raw;
}
