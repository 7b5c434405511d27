/**
 * LPC-CM in the stream manager: relays its instances' checkpoint requests to the container's
 * checkpoint manager and the answers back to the instance that asked. Requests are renumbered
 * towards the manager, so an answer reaches exactly the connection (the incarnation) that
 * asked, never a later one that reuses its request ids. Parts are forwarded as they come (no
 * reassembly, nothing held here), and an instance may touch only its own checkpoints and its
 * stage's group checkpoints.
 *
 * Without a manager connection a request is answered with an error at once: the replica
 * retries. When the manager's link drops, every request in flight is answered so too.
 */
import { WireError } from "../wire/errors.js";
import type { CkptReply, CkptRequest } from "../wire/messages.js";

export interface RelayLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

/** The instance a client relays for. */
export interface RelayInstance {
  readonly task: number;
  readonly stage: string;
  readonly index: number;
  send(message: CkptReply): void;
}

interface InFlight {
  readonly client: RelayClient;
  readonly req: number;
  /** Bytes of the answer still to come, once its `ckpt-ok` announced more than it carried. */
  left: number;
}

export class CheckpointRelay {
  private manager: ((message: CkptRequest) => void) | undefined;
  private readonly inFlight = new Map<number, InFlight>();
  private readonly clients = new Set<RelayClient>();
  private nextReq = 0;
  /** Why there is no manager connection now. */
  private absent: string;

  /**
   * @param namespace the `topology` of this run's checkpoint owners
   * @param hasManager whether the container runs a checkpoint manager at all
   */
  constructor(
    readonly namespace: string,
    private readonly log: RelayLog,
    hasManager: boolean,
  ) {
    this.absent = hasManager
      ? "the checkpoint manager is not connected"
      : "this container runs no checkpoint manager";
  }

  get connected(): boolean {
    return this.manager !== undefined;
  }

  client(instance: RelayInstance): RelayClient {
    const client = new RelayClient(this, instance);
    this.clients.add(client);
    return client;
  }

  managerUp(send: (message: CkptRequest) => void): void {
    this.manager = send;
  }

  managerDown(reason: string): void {
    if (this.manager === undefined) return;
    this.manager = undefined;
    this.absent = `the checkpoint manager is not connected (${reason})`;
    // Parts still to come from instances belong to requests the manager will never see.
    for (const client of this.clients) client.discardUploads();
    const lost = [...this.inFlight.values()];
    this.inFlight.clear();
    for (const { client, req } of lost) {
      client.answer({ t: "ckpt-error", req, reason: `lost the checkpoint manager: ${reason}` });
    }
  }

  /** An answer from the manager. Throws WireError if it answers nothing asked. */
  fromManager(message: CkptReply): void {
    const entry = this.inFlight.get(message.req);
    // Parts only, and all of them, after an ok that announced more than it carried.
    if (!entry || (message.t === "ckpt-part") !== entry.left > 0) {
      throw new WireError("FRAME_INVALID", `unexpected ${message.t} for request ${message.req}`);
    }
    const forwarded = { ...message, req: entry.req };
    switch (message.t) {
      case "ckpt-ok":
        entry.left = message.size - message.data.length;
        break;
      case "ckpt-part":
        entry.left -= message.data.length;
        break;
      case "ckpt-error":
        entry.left = 0;
        break;
    }
    if (entry.left < 0) {
      throw new WireError("FRAME_INVALID", `answer to ${message.req} longer than announced`);
    }
    if (entry.left === 0) this.inFlight.delete(message.req);
    entry.client.answer(forwarded);
  }

  /** For RelayClient: sends a request on towards the manager; its id there, or an error. */
  forward(client: RelayClient, message: CkptRequest): number | string {
    if (!this.manager) return this.absent;
    const id = this.nextReq++;
    this.inFlight.set(id, { client, req: message.req, left: 0 });
    this.manager({ ...message, req: id });
    return id;
  }

  forwardPart(to: number, data: Uint8Array): void {
    this.manager?.({ t: "ckpt-part", req: to, data });
  }

  removeClient(client: RelayClient): void {
    this.clients.delete(client);
    // Its answers in flight are dropped when they come (the client is closed).
  }

  warn(obj: object, msg: string): void {
    this.log.warn(obj, msg);
  }
}

export class RelayClient {
  /** Puts whose parts are still coming: where they go (undefined: dropped) and how many bytes. */
  private readonly uploads = new Map<number, { to: number | undefined; left: number }>();
  private closed = false;

  constructor(
    private readonly relay: CheckpointRelay,
    private readonly instance: RelayInstance,
  ) {}

  /** A request from the instance. Throws WireError if it breaks the protocol. */
  handle(message: CkptRequest): void {
    if (message.t === "ckpt-part") return this.part(message.req, message.data);
    if (this.uploads.has(message.req)) {
      throw new WireError("FRAME_INVALID", `request ${message.req} is still uploading`);
    }
    const left = message.t === "ckpt-put" ? message.size - message.data.length : 0;
    if (left < 0) throw new WireError("FRAME_INVALID", "a put longer than its size");
    const owner = message.t === "ckpt-put" ? message.ref.owner : message.owner;
    const { stage, index } = this.instance;
    let outcome: number | string;
    if (
      owner.topology !== this.relay.namespace ||
      owner.stage !== stage ||
      (owner.replica !== index && owner.replica !== "group")
    ) {
      outcome = `${stage}:${index} may not use the checkpoints of ${owner.stage}/${owner.replica}`;
      this.relay.warn(
        { event: "checkpoint-refused", task: this.instance.task, reason: outcome },
        "checkpoint request refused",
      );
    } else {
      outcome = this.relay.forward(this, message);
    }
    if (typeof outcome === "string") {
      this.answer({ t: "ckpt-error", req: message.req, reason: outcome });
      if (left > 0) this.uploads.set(message.req, { to: undefined, left });
    } else if (left > 0) {
      this.uploads.set(message.req, { to: outcome, left });
    }
  }

  answer(message: CkptReply): void {
    if (!this.closed) this.instance.send(message);
  }

  discardUploads(): void {
    for (const upload of this.uploads.values()) upload.to = undefined;
  }

  close(): void {
    this.closed = true;
    this.relay.removeClient(this);
  }

  private part(req: number, data: Uint8Array): void {
    const upload = this.uploads.get(req);
    if (!upload) throw new WireError("FRAME_INVALID", `checkpoint part of no upload (${req})`);
    if (data.length > upload.left) {
      throw new WireError("FRAME_INVALID", `put ${req} longer than its size`);
    }
    upload.left -= data.length;
    if (upload.left === 0) this.uploads.delete(req);
    if (upload.to !== undefined) this.relay.forwardPart(upload.to, data);
  }
}
