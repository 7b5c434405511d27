/** Errors caused by what arrived on a connection. They close that connection, never the process. */
export type WireErrorCode =
  | "FRAME_TOO_LARGE"
  | "FRAME_EMPTY"
  | "FRAME_MALFORMED"
  | "FRAME_INVALID"
  | "AUTH_FAILED"
  | "HANDSHAKE_TIMEOUT"
  | "UNEXPECTED_FRAME";

export class WireError extends Error {
  override readonly name = "WireError";
  constructor(
    readonly code: WireErrorCode,
    message: string,
  ) {
    super(message);
  }
}
