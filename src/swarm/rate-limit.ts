// Lines that a peer can provoke at will (a refused handshake, a rejected set) are logged at a
// bounded rate: a flood of connections must not fill the disk. Pure (time is passed in).

export class LogRate {
  private windowStart = -Infinity;
  private said = 0;
  private suppressed = 0;

  constructor(
    /** Lines allowed per window. */
    private readonly perWindow = 10,
    private readonly windowMs = 60_000,
  ) {}

  /**
   * Whether a line may be written now; if so, how many were held back since the last one
   * written (to say so in it), else null.
   */
  take(now: number): { suppressed: number } | null {
    if (now - this.windowStart >= this.windowMs) {
      this.windowStart = now;
      this.said = 0;
    }
    if (this.said >= this.perWindow) {
      this.suppressed++;
      return null;
    }
    this.said++;
    const suppressed = this.suppressed;
    this.suppressed = 0;
    return { suppressed };
  }
}
